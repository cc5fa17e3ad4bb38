'use strict';
// piscina worker: the same task protocol as the child_process pool (workloads.cjs runOp).
const { runOp } = require('./workloads.cjs');
module.exports = runOp;
