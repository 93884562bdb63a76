/**
 * One tab at a time per browser: two tabs would drive the same local store (its ratchets)
 * and share one single-use refresh token, and either would break the other. A Web Lock held
 * for the page's lifetime says which tab is the one; another tab may take it over ("Use
 * here"), and the tab it was taken from learns it through `onLost`.
 */

const LOCK = 'copains-active-tab';

/** Takes the lock (or takes it over with `steal`). Resolves false when another tab holds it. */
export function acquireTabLock(steal: boolean, onLost: () => void): Promise<boolean> {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  if (!locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    const options: LockOptions = steal ? { steal: true } : { ifAvailable: true };
    locks
      .request(LOCK, options, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        // Held until the page goes away or another tab steals it.
        return new Promise<void>(() => {});
      })
      .catch(() => onLost());
  });
}
