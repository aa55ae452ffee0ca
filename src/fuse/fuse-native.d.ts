// The parts of fuse-native 2.2.6 that replfs uses. The package ships no types.
declare module 'fuse-native' {
  type Callback = (...args: unknown[]) => void;
  interface FuseOptions {
    force?: boolean;
    mkdir?: boolean;
    timeout?: number | false;
    debug?: boolean;
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, Callback>, opts?: FuseOptions);
    readonly mnt: string;
    readonly opts: FuseOptions;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    _fuseOptions(): string;
  }
  export = Fuse;
}
