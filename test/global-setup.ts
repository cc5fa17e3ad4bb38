// Runs once around the whole suite: afterwards, nothing of ours may be left in /dev/shm.
import * as fs from 'node:fs';

const SHM_PREFIX = 'mp-';

function ours(): string[] {
  try {
    return fs.readdirSync('/dev/shm').filter((n) => n.startsWith(SHM_PREFIX) || n.startsWith('sem.' + SHM_PREFIX));
  } catch {
    return [];
  }
}

export default function setup(): () => void {
  const before = new Set(ours());
  return () => {
    const leaked = ours().filter((n) => !before.has(n));
    if (leaked.length > 0) {
      throw new Error(`the test suite left shared-memory objects behind in /dev/shm: ${leaked.join(', ')}`);
    }
  };
}
