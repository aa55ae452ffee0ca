// The first thing a new user does: init, mount in place, write, look at the journal, unmount.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import { scratch, replfs, initVolume, mountVolume, isMounted } from '../helpers/env.js';

test('init, mount in place, write, journal, unmount', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'hello\n');
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  t.true(await isMounted(dir));
  await fs.promises.appendFile(path.join(dir, 'a.txt'), 'world\n');
  t.is(await fs.promises.readFile(path.join(dir, 'a.txt'), 'utf8'), 'hello\nworld\n');
  const j = await replfs(s, ['journal', dir, '--json']);
  t.is(j.code, 0, j.stderr);
  const report = JSON.parse(j.stdout) as { files: Array<{ path: string; kinds: string[]; extents: unknown[] }> };
  const a = report.files.find((f) => f.path === 'a.txt');
  t.truthy(a);
  t.deepEqual(a?.kinds, ['data']);
  t.deepEqual(a?.extents, [{ offset: 0, length: 12 }]);
  const u = await replfs(s, ['unmount', dir]);
  t.is(u.code, 0, u.stderr);
  t.false(await isMounted(dir));
  t.is(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8'), 'hello\nworld\n');
});
