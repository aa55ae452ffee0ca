// The layering rule of docs/architecture.md, checked on the sources: each folder of src/
// may import only the folders listed for it, and nothing imports cli/ or fuse/ except cli/.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import { ROOT } from '../helpers/env.js';

export const ALLOWED: Record<string, string[]> = {
  core: [],
  errors: ['core'],
  volume: ['core', 'errors'],
  fuse: ['volume'],
  control: ['volume', 'errors'],
  replicate: ['volume', 'core', 'errors'],
  policy: ['core'],
  archive: ['core'],
  cli: ['core', 'errors', 'volume', 'fuse', 'control', 'replicate', 'policy', 'archive'],
};

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.(ts|mts)$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

export function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/g)) specs.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) specs.push(m[1]!);
  return specs;
}

export function violations(srcRoot: string): string[] {
  const out: string[] = [];
  for (const file of sources(srcRoot)) {
    const layer = path.relative(srcRoot, file).split(path.sep)[0]!;
    const allowed = ALLOWED[layer];
    if (!allowed) { out.push(`${path.relative(srcRoot, file)}: folder "${layer}" is not a known layer`); continue; }
    for (const spec of importsOf(file)) {
      if (!spec.startsWith('.')) continue;
      const target = path.relative(srcRoot, path.resolve(path.dirname(file), spec)).split(path.sep)[0]!;
      if (target === layer) continue;
      if (!allowed.includes(target)) out.push(`${path.relative(srcRoot, file)} imports ${spec} (${layer} may not import ${target})`);
    }
  }
  return out;
}

test('every src/ folder imports only the layers it may', (t) => {
  t.deepEqual(violations(path.join(ROOT, 'src')), []);
});

test('the layer check catches a forbidden import', (t) => {
  const tmp = fs.mkdtempSync(path.join(ROOT, 'test-results', 'layers-'));
  try {
    fs.mkdirSync(path.join(tmp, 'volume'));
    fs.mkdirSync(path.join(tmp, 'cli'));
    fs.writeFileSync(path.join(tmp, 'cli', 'x.ts'), 'export const x = 1;\n');
    fs.writeFileSync(path.join(tmp, 'volume', 'bad.ts'), "import { x } from '../cli/x.js';\nexport const y = x;\n");
    t.deepEqual(violations(tmp), ['volume/bad.ts imports ../cli/x.js (volume may not import cli)']);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
