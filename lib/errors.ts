// The error catalog. Every library error has a class (so `instanceof` works) and a stable
// `code`; OS failures are Node SystemErrors made by native/errors.cc instead.

export interface ErrorOptions {
  cause?: unknown;
  code?: string;
}

/** Base class of every error this library throws itself. */
export class MultiprocError extends Error {
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.code = code;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

/** Generic failure of a process operation (CPython's ProcessError). */
export class ProcessError extends MultiprocError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_PROCESS', options);
  }
}

/** A wait ran out of time where the API promises an error rather than `false`. */
export class TimeoutError extends ProcessError {
  constructor(message = 'timed out', options?: ErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_MP_TIMEOUT' });
  }
}

/** Raised by recvBytesInto when the buffer is too small; `.message` holds the whole message. */
export class BufferTooShort extends ProcessError {
  readonly data: Buffer;
  constructor(data: Buffer) {
    super(`buffer too short for a message of ${data.length} bytes`, { code: 'ERR_MP_BUFFER_TOO_SHORT' });
    this.data = data;
  }
}

export class AuthenticationError extends ProcessError {
  constructor(message = 'authentication failed', options?: ErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_MP_AUTHENTICATION' });
  }
}

/** queue.get() on an empty queue without waiting (Python's queue.Empty). */
export class Empty extends MultiprocError {
  constructor(message = 'queue is empty') {
    super(message, 'ERR_MP_EMPTY');
  }
}

/** queue.put() on a full queue without waiting (Python's queue.Full). */
export class Full extends MultiprocError {
  constructor(message = 'queue is full') {
    super(message, 'ERR_MP_FULL');
  }
}

/** Python's ValueError: a call that is wrong for the object's current state or value. */
export class ValueError extends MultiprocError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_VALUE', options);
  }
}

/** Python's AssertionError as multiprocessing raises it (misuse of a process or RLock). */
export class AssertionError extends MultiprocError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_ASSERTION', options);
  }
}

export class BrokenBarrierError extends MultiprocError {
  constructor(message = 'barrier is broken') {
    super(message, 'ERR_MP_BROKEN_BARRIER');
  }
}

export class BrokenProcessPool extends MultiprocError {
  constructor(message = 'a process in the process pool was terminated abruptly', options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_BROKEN_PROCESS_POOL', options);
  }
}

export class WorkerLostError extends MultiprocError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_WORKER_LOST', options);
  }
}

export class CancelledError extends MultiprocError {
  constructor(message = 'cancelled') {
    super(message, 'ERR_MP_CANCELLED');
  }
}

/** The other end of a connection was closed. */
export class EOFError extends MultiprocError {
  constructor(message = 'connection closed by peer') {
    super(message, 'ERR_MP_EOF');
  }
}

/** A lock's previous holder died while holding it (the caller now holds it). */
export class OwnerDiedError extends MultiprocError {
  constructor(message = 'the previous owner of the lock died while holding it') {
    super(message, 'ERR_MP_OWNER_DIED');
  }
}

/** Python's RuntimeError: an operation that is not allowed in this state or context. */
export class RuntimeError extends MultiprocError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options?.code ?? 'ERR_MP_RUNTIME', options);
  }
}

/** A TypeError/RangeError with a stable code, for bad arguments (like Node's ERR_INVALID_ARG_TYPE). */
/** A function that cannot travel to a spawn/forkserver child (it is not exported by a module). */
export class NotReferenceableError extends MultiprocError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_MP_NOT_REFERENCEABLE', options);
  }
}

export function invalidArgType(name: string, expected: string, actual: unknown): TypeError {
  const e = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`) as TypeError & {
    code: string;
  };
  e.code = 'ERR_INVALID_ARG_TYPE';
  return e;
}

export function invalidArgValue(name: string, actual: unknown, reason: string): RangeError {
  const e = new RangeError(`The "${name}" argument ${reason}. Received ${describe(actual)}`) as RangeError & {
    code: string;
  };
  e.code = 'ERR_INVALID_ARG_VALUE';
  return e;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return `function ${v.name || '<anonymous>'}`;
  if (typeof v === 'object') return `an instance of ${v.constructor?.name ?? 'Object'}`;
  if (typeof v === 'string') return `type string (${JSON.stringify(v.length > 28 ? v.slice(0, 25) + '...' : v)})`;
  return `type ${typeof v} (${String(v)})`;
}
