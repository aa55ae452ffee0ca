/**
 * Maps `items` through `fn` with at most `limit` calls in flight, keeping the order. Used
 * where a burst of file system or database calls would otherwise fill the thread pool and
 * hold up the requests that applications are waiting for.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
