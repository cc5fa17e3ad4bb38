// ESM entry: re-exports the CommonJS build so both module systems share one instance (one
// resource tracker, one set of children).
export * from '../dist/index.js';
