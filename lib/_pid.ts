// Internal: this process's id, cached. Reading `process.pid` costs ~17 ns (process is a
// dictionary-mode object): too much for a lock's uncontended path, which needs the pid on every
// acquire. A forked child must refresh it before any of its JS runs: afterForkInChild() in
// lib/popen/child.ts calls refreshPid() right after it redefines process.pid.
export let currentPid: number = process.pid;

export function refreshPid(): void {
  currentPid = process.pid;
}
