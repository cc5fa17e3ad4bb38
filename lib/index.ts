// multiproc: Python's multiprocessing for Node.js. The Python-style layer.
export * from './errors';
