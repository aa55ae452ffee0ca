// The package version, read once from package.json.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

function findPackageJson(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'package.json');
    try {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'replfs') return candidate;
    } catch { /* keep climbing */ }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('replfs: cannot find its package.json');
    dir = up;
  }
}

export const PACKAGE_JSON = findPackageJson();
export const PACKAGE_ROOT = path.dirname(PACKAGE_JSON);
export const VERSION: string = (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version: string }).version;
