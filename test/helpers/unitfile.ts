// Reading systemd unit files as systemd does, far enough to run their Exec lines by hand:
// sections and keys, instance specifiers (%i, %I, %f, %n...), EnvironmentFile= contents,
// the splitting of a command line into words, and $VAR / ${VAR} / $$ at exec time.
// (systemd.unit(5) "Specifiers", systemd.service(5) "Command lines", systemd.syntax(7).)

export interface UnitEntry {
  section: string;
  key: string;
  value: string;
}

/** Every `Key=Value` of a unit file, in order, with its section. */
export function parseUnit(text: string): UnitEntry[] {
  const out: UnitEntry[] = [];
  let section = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = line.slice(0, -1) + ' ' + lines[++i]!.trim();
    const sec = /^\[([^\]]+)\]$/.exec(line);
    if (sec) { section = sec[1]!; continue; }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`not a Key=Value line in [${section}]: ${line}`);
    out.push({ section, key: line.slice(0, eq).trim(), value: line.slice(eq + 1).trim() });
  }
  return out;
}

/** The values of `key` in `section`, in order. */
export function values(unit: UnitEntry[], section: string, key: string): string[] {
  return unit.filter((e) => e.section === section && e.key === key).map((e) => e.value);
}

/** The one value of `key` in `section`; throws when there is none or several. */
export function value(unit: UnitEntry[], section: string, key: string): string {
  const v = values(unit, section, key);
  if (v.length !== 1) throw new Error(`[${section}] ${key}= is set ${v.length} times`);
  return v[0]!;
}

/** `systemd-escape --path`. */
export function escapePath(p: string): string {
  const trimmed = p.replace(/\/+/g, '/').replace(/^\/|\/$/g, '');
  if (trimmed === '') return '-';
  let out = '';
  const bytes = Buffer.from(trimmed, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const c = String.fromCharCode(bytes[i]!);
    if (c === '/') out += '-';
    else if (/[A-Za-z0-9:_]/.test(c) || (c === '.' && i > 0)) out += c;
    else out += `\\x${bytes[i]!.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The reverse of escaping: `-` is `/`, `\xNN` a byte. */
export function unescapeName(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === 'x' && /^[0-9a-f]{2}$/i.test(s.slice(i + 2, i + 4))) {
      bytes.push(parseInt(s.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (s[i] === '-') {
      bytes.push(0x2f);
    } else {
      bytes.push(...Buffer.from(s[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** The specifiers of a unit `name` such as `replfs@srv-data.service` that these units use. */
export function specifiers(name: string): Record<string, string> {
  const m = /^([^@]+)@(.*)\.([a-z]+)$/.exec(name);
  if (!m) throw new Error(`${name} is not a template instance`);
  const [, prefix, instance] = m as unknown as [string, string, string];
  return {
    n: name, N: name.replace(/\.[a-z]+$/, ''), p: prefix, i: instance, I: unescapeName(instance),
    f: '/' + unescapeName(instance).replace(/^\/+/, ''), '%': '%',
  };
}

export function expandSpecifiers(text: string, spec: Record<string, string>): string {
  return text.replace(/%(.)/g, (all, c: string) => {
    const v = spec[c];
    if (v === undefined) throw new Error(`specifier ${all} is not known here`);
    return v;
  });
}

/** An EnvironmentFile=: KEY=VALUE lines, comments, values quoted whole or not. */
export function parseEnvironmentFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`not a variable assignment: ${line}`);
    let v = m[2]!;
    if (/^"(.*)"$/.test(v) || /^'(.*)'$/.test(v)) v = v.slice(1, -1);
    out[m[1]!] = v;
  }
  return out;
}

export interface ExecLine {
  /** The prefixes systemd reads before the path: `-` (failure ignored), `@`, `+`, `!`, `:`. */
  prefixes: string;
  /** The words after specifiers, before variables. */
  words: string[];
}

/** Splits a command line into words (quotes, C escapes) and expands specifiers. */
export function splitExec(line: string, spec: Record<string, string>): ExecLine {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    let word = '';
    while (i < line.length && !/\s/.test(line[i]!)) {
      const c = line[i]!;
      if (c === '"' || c === '\'') {
        const end = line.indexOf(c, i + 1);
        if (end < 0) throw new Error(`unterminated quote in: ${line}`);
        word += unescapeC(line.slice(i + 1, end));
        i = end + 1;
      } else if (c === '\\' && i + 1 < line.length) {
        word += unescapeC(line.slice(i, i + 2));
        i += 2;
      } else {
        word += c;
        i++;
      }
    }
    words.push(word);
  }
  const m = /^([-@+!:]*)(.*)$/.exec(words[0] ?? '')!;
  words[0] = m[2]!;
  return { prefixes: m[1]!, words: words.map((w) => expandSpecifiers(w, spec)) };
}

function unescapeC(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => ({ n: '\n', t: '\t', '\\': '\\', '"': '"', '\'': '\'' } as Record<string, string>)[c] ?? c);
}

/** What systemd execs: `$VAR` alone as a word is split at whitespace, `${VAR}` replaced within words, `$$` is `$`. */
export function expandEnvironment(words: string[], env: Record<string, string | undefined>): string[] {
  const out: string[] = [];
  for (const w of words) {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(w);
    if (whole) {
      out.push(...(env[whole[1]!] ?? '').split(/\s+/).filter(Boolean));
      continue;
    }
    out.push(w.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string | undefined) => (all === '$$' ? '$' : env[name!] ?? '')));
  }
  return out;
}
