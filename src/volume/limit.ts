/**
 * Maps `items` through `fn` with at most `limit` calls in flight, keeping the order. Used
 * where a burst of file system or database calls would otherwise fill the thread pool and
 * hold up the requests that applications are waiting for. If a call fails, no new one
 * starts, and the first failure is thrown once the calls already in flight are over (so
 * nothing is still changing things when the caller hears of it).
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  let failure: unknown;
  const worker = async () => {
    while (next < items.length && !failed) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!);
      } catch (err) {
        if (!failed) { failed = true; failure = err; }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed) throw failure;
  return out;
}
