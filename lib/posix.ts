// multiproc/posix: the raw OS layer, with C semantics.
export {};
