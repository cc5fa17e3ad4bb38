// Preloaded by `npx multiproc` (node --require dist/preload.js) before the user's program: the
// fork bookkeeping is in place before any user code runs, so that every timer and immediate the
// program creates records its owner (they stay quiet in forked children) and every
// worker_threads Worker is counted by isForkSafe().
import { installWorkerTracking } from './forksafe';
import { installTimerGuards } from './popen/child';

installWorkerTracking();
installTimerGuards();
