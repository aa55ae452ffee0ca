// Path globs, for `replfs find`: which paths of a tree a pattern selects. Pure.
//
// A pattern is a path relative to the top of the tree, `/`-separated. In one component:
// `*` matches any characters (none included), `?` one character, `[abc]`, `[a-z]` one of
// those, `[!abc]` or `[^abc]` one character not among them, and `\` takes the next
// character literally. None of them matches a `/`. A component that is exactly `**`
// matches any number of components, none included (`a/**/b` matches `a/b` and `a/x/y/b`;
// `**` matches every path); elsewhere `**` is the same as `*`. Wildcards match names that
// begin with a dot too.
//
// Matching follows the tree a directory at a time: a state is the set of pattern positions
// the path so far can have reached, so that a walk descends only where a match is possible
// and looks names up instead of listing directories where the pattern names them.

export class GlobError extends Error {
  constructor(readonly pattern: string, message: string) {
    super(`bad glob ${JSON.stringify(pattern)}: ${message}`);
    this.name = 'GlobError';
  }
}

type Part =
  | { kind: 'globstar' }
  | { kind: 'name'; re: RegExp; literal: string | null };

/** Where a walk stands in the pattern: sorted positions (a position is the number of components matched). */
export type GlobState = readonly number[];

export class Glob {
  private constructor(readonly pattern: string, private readonly parts: Part[]) {}

  static parse(pattern: string): Glob {
    const fail = (msg: string): never => { throw new GlobError(pattern, msg); };
    if (pattern === '') fail('it is empty');
    if (pattern.includes('\0')) fail('it holds a NUL character');
    if (pattern.startsWith('/')) fail('it must be relative to the top of the volume (no leading /)');
    const parts: Part[] = [];
    for (const comp of splitComponents(pattern, fail)) {
      if (comp === '') fail('it has an empty component (// or a trailing /)');
      if (comp === '**') {
        if (parts.at(-1)?.kind !== 'globstar') parts.push({ kind: 'globstar' });
        continue;
      }
      parts.push(compileComponent(comp, fail));
    }
    return new Glob(pattern, parts);
  }

  /** The state at the top of the tree. */
  start(): GlobState {
    return this.closure([0]);
  }

  /** The state after descending to the entry `name` (empty: nothing below or at it can match). */
  next(state: GlobState, name: string): GlobState {
    const out: number[] = [];
    for (const i of state) {
      const part = this.parts[i];
      if (!part) continue;
      if (part.kind === 'globstar') out.push(i);
      else if (part.re.test(name)) out.push(i + 1);
    }
    return this.closure(out);
  }

  /** Whether the path that led to `state` matches the whole pattern. */
  matches(state: GlobState): boolean {
    return state.includes(this.parts.length);
  }

  /** Whether some path below the one that led to `state` could match. */
  canDescend(state: GlobState): boolean {
    return state.some((i) => i < this.parts.length);
  }

  /**
   * The only names that can go on from `state`, when the pattern spells them out (no
   * wildcard in the next component of any position): a walk looks them up instead of
   * listing the directory. Null when a listing is needed.
   */
  literals(state: GlobState): string[] | null {
    const names = new Set<string>();
    for (const i of state) {
      const part = this.parts[i];
      if (!part) continue;
      if (part.kind === 'globstar' || part.literal === null) return null;
      names.add(part.literal);
    }
    return [...names];
  }

  /** Whether the relative path `path` matches. */
  test(path: string): boolean {
    let state = this.start();
    for (const name of path.split('/')) {
      state = this.next(state, name);
      if (state.length === 0) return false;
    }
    return this.matches(state);
  }

  private closure(positions: number[]): GlobState {
    const set = new Set<number>();
    for (let i of positions) {
      set.add(i);
      while (this.parts[i]?.kind === 'globstar') set.add(++i);
    }
    return [...set].sort((a, b) => a - b);
  }
}

/** Splits at every `/` that is not escaped. */
function splitComponents(pattern: string, fail: (msg: string) => never): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\') {
      const n = pattern[i + 1];
      if (n === undefined) fail('it ends with a lone \\');
      if (n === '/') fail('a / cannot be escaped: no name holds one');
      cur += c + n;
      i++;
    } else if (c === '/') {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

// Escapes for a unicode-mode RegExp, which refuses escapes of characters that need none.
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const escapeClass = (s: string) => s.replace(/[[\]\\^-]/g, '\\$&');

function compileComponent(comp: string, fail: (msg: string) => never): Part {
  const chars = [...comp];
  let re = '';
  let literal: string | null = '';
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '\\') {
      const n = chars[++i]!;
      re += escapeRe(n);
      if (literal !== null) literal += n;
    } else if (c === '*') {
      while (chars[i + 1] === '*') i++;
      re += '.*';
      literal = null;
    } else if (c === '?') {
      re += '.';
      literal = null;
    } else if (c === '[') {
      const { source, end } = compileClass(chars, i, fail);
      re += source;
      i = end;
      literal = null;
    } else {
      re += escapeRe(c);
      if (literal !== null) literal += c;
    }
  }
  if (literal === '.' || literal === '..') fail(`"${literal}" is not a name in a tree`);
  return { kind: 'name', re: new RegExp(`^${re}$`, 'su'), literal };
}

/** A bracket expression starting at chars[start] === '[': its regex class and where it ends. */
function compileClass(chars: string[], start: number, fail: (msg: string) => never): { source: string; end: number } {
  let i = start + 1;
  let negate = false;
  if (chars[i] === '!' || chars[i] === '^') {
    negate = true;
    i++;
  }
  const items: string[] = [];
  let first = true;
  for (;; first = false) {
    let c = chars[i];
    if (c === undefined) fail(`the [ at character ${start + 1} is not closed`);
    if (c === ']' && !first) break;
    if (c === '\\') {
      c = chars[++i];
      if (c === undefined) fail('it ends with a lone \\');
    }
    const lo = c!;
    i++;
    if (chars[i] === '-' && chars[i + 1] !== undefined && chars[i + 1] !== ']') {
      let hi = chars[i + 1]!;
      i += 2;
      if (hi === '\\') {
        hi = chars[i]!;
        if (hi === undefined) fail('it ends with a lone \\');
        i++;
      }
      if (hi.codePointAt(0)! < lo.codePointAt(0)!) fail(`the range ${lo}-${hi} is backwards`);
      items.push(`${escapeClass(lo)}-${escapeClass(hi)}`);
      continue;
    }
    items.push(escapeClass(lo));
  }
  return { source: `[${negate ? '^' : ''}${items.join('')}]`, end: i };
}
