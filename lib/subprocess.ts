// multiproc/subprocess: Python's subprocess.run / Popen, over node:child_process.
//
// Differences from Python, following Node habits: timeouts are milliseconds, waits are
// Promises with blocking `Sync` twins (`run` / `runSync`), output is a Buffer unless `text`.
import * as cp from 'node:child_process';
import { constants as osConstants } from 'node:os';

import { MultiprocError, invalidArgType, invalidArgValue } from './errors';

type Output = Buffer | string;

export interface RunOptions {
  /** Capture stdout and stderr (Python's capture_output). Otherwise they are inherited. */
  capture?: boolean;
  /** Decode output as UTF-8 strings instead of Buffers. */
  text?: boolean;
  /** Throw CalledProcessError when the exit code is not 0. */
  check?: boolean;
  /** Milliseconds; the child is killed (SIGKILL) and TimeoutExpired thrown when it runs longer. */
  timeout?: number;
  /** Written to the child's stdin, which is then closed. */
  input?: string | Buffer | Uint8Array;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export class CompletedProcess {
  constructor(
    readonly args: readonly string[],
    /** Exit code, or -N when the child died of signal N (as in Python). */
    readonly returncode: number,
    readonly stdout: Output | null,
    readonly stderr: Output | null,
  ) {}

  /** Throws CalledProcessError if returncode is not 0. */
  checkReturncode(): void {
    if (this.returncode !== 0) throw new CalledProcessError(this.returncode, this.args, this.stdout, this.stderr);
  }
}

export class SubprocessError extends MultiprocError {}

export class CalledProcessError extends SubprocessError {
  constructor(
    readonly returncode: number,
    readonly cmd: readonly string[],
    readonly stdout: Output | null = null,
    readonly stderr: Output | null = null,
  ) {
    super(
      returncode < 0
        ? `Command '${cmd.join(' ')}' died with signal ${signalName(-returncode)}.`
        : `Command '${cmd.join(' ')}' returned non-zero exit status ${returncode}.`,
      'ERR_MP_CALLED_PROCESS',
    );
  }
}

export class TimeoutExpired extends SubprocessError {
  constructor(
    readonly cmd: readonly string[],
    readonly timeout: number,
    readonly stdout: Output | null = null,
    readonly stderr: Output | null = null,
  ) {
    super(`Command '${cmd.join(' ')}' timed out after ${timeout} milliseconds`, 'ERR_MP_TIMEOUT_EXPIRED');
  }
}

function signalName(n: number): string {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name;
  return String(n);
}

function returncodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (signal) return -(osConstants.signals[signal] ?? 0);
  return code ?? 0;
}

function checkArgs(args: unknown): asserts args is string[] {
  if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) {
    throw invalidArgType('args', 'an array of strings', args);
  }
  if (args.length === 0) throw invalidArgValue('args', args, 'must name a program');
}

function checkTimeout(timeout: unknown): void {
  if (timeout !== undefined && (typeof timeout !== 'number' || Number.isNaN(timeout))) {
    throw invalidArgType('timeout', 'a number of milliseconds', timeout);
  }
}

function decode(buf: Buffer | null, text: boolean | undefined): Output | null {
  if (buf === null) return null;
  return text ? buf.toString('utf8') : buf;
}

/** Runs a command and waits for it: Python's subprocess.run. */
export async function run(args: string[], options: RunOptions = {}): Promise<CompletedProcess> {
  checkArgs(args);
  checkTimeout(options.timeout);
  const p = new Popen(args, {
    stdin: options.input !== undefined ? 'pipe' : 'inherit',
    stdout: options.capture ? 'pipe' : 'inherit',
    stderr: options.capture ? 'pipe' : 'inherit',
    cwd: options.cwd,
    env: options.env,
  });
  let out: { stdout: Buffer | null; stderr: Buffer | null };
  try {
    out = await p.communicateRaw(options.input, options.timeout);
  } catch (err) {
    if (err instanceof TimeoutExpired) {
      p.kill();
      const rest = await p.communicateRaw();
      throw new TimeoutExpired(args, err.timeout, decode(rest.stdout, options.text), decode(rest.stderr, options.text));
    }
    throw err;
  }
  const done = new CompletedProcess(args, p.returncode ?? 0, decode(out.stdout, options.text), decode(out.stderr, options.text));
  if (options.check) done.checkReturncode();
  return done;
}

/** The blocking twin of run(). */
export function runSync(args: string[], options: RunOptions = {}): CompletedProcess {
  checkArgs(args);
  checkTimeout(options.timeout);
  const r = cp.spawnSync(args[0]!, args.slice(1), {
    input: options.input,
    stdio: [options.input !== undefined ? 'pipe' : 'inherit', options.capture ? 'pipe' : 'inherit', options.capture ? 'pipe' : 'inherit'],
    cwd: options.cwd,
    env: options.env,
    timeout: options.timeout !== undefined ? Math.max(1, options.timeout) : undefined,
    killSignal: 'SIGKILL',
    maxBuffer: Infinity,
  });
  if (r.error) {
    const e = r.error as NodeJS.ErrnoException;
    if (e.code === 'ETIMEDOUT') {
      throw new TimeoutExpired(args, options.timeout ?? 0, decode(r.stdout ?? null, options.text), decode(r.stderr ?? null, options.text));
    }
    throw e;
  }
  const done = new CompletedProcess(
    args,
    returncodeOf(r.status, r.signal),
    decode(r.stdout ?? null, options.text),
    decode(r.stderr ?? null, options.text),
  );
  if (options.check) done.checkReturncode();
  return done;
}

export type StdioOption = 'pipe' | 'inherit' | 'ignore' | number;

export interface PopenOptions {
  stdin?: StdioOption;
  stdout?: StdioOption;
  stderr?: StdioOption;
  cwd?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

/** A running child process: Python's subprocess.Popen. */
export class Popen {
  readonly args: readonly string[];
  readonly #child: cp.ChildProcess;
  readonly #exited: Promise<number>;
  #returncode: number | null = null;

  constructor(args: string[], options: PopenOptions = {}) {
    checkArgs(args);
    this.args = [...args];
    this.#child = cp.spawn(args[0]!, args.slice(1), {
      stdio: [options.stdin ?? 'inherit', options.stdout ?? 'inherit', options.stderr ?? 'inherit'],
      cwd: options.cwd,
      env: options.env,
    });
    this.#exited = new Promise<number>((resolve, reject) => {
      // 'error' alone means the program could not be started (ENOENT ...): no 'close' follows.
      this.#child.once('error', (err) => {
        if (this.#child.pid === undefined) reject(err);
      });
      this.#child.once('close', (code, signal) => {
        this.#returncode = returncodeOf(code, signal);
        resolve(this.#returncode);
      });
    });
    // A start failure is reported by wait()/communicate(); keep it from being "unhandled" here.
    this.#exited.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }
  get stdin(): NodeJS.WritableStream | null {
    return this.#child.stdin;
  }
  get stdout(): NodeJS.ReadableStream | null {
    return this.#child.stdout;
  }
  get stderr(): NodeJS.ReadableStream | null {
    return this.#child.stderr;
  }
  /** Exit code, -N for signal N, or null while running. */
  get returncode(): number | null {
    return this.#returncode;
  }

  /** The returncode if the child has ended, else null (never waits). */
  poll(): number | null {
    return this.#returncode;
  }

  /** Waits for the child to end; throws TimeoutExpired after `timeout` ms (the child keeps running). */
  async wait(timeout?: number): Promise<number> {
    checkTimeout(timeout);
    return withTimeout(this.#exited, timeout, () => new TimeoutExpired(this.args, timeout ?? 0));
  }

  /** Sends input, reads stdout/stderr to the end, waits for the child. */
  async communicate(input?: string | Buffer | Uint8Array, timeout?: number): Promise<{ stdout: Buffer | null; stderr: Buffer | null }> {
    checkTimeout(timeout);
    return this.communicateRaw(input, timeout);
  }

  /** @internal */
  async communicateRaw(input?: string | Buffer | Uint8Array, timeout?: number): Promise<{ stdout: Buffer | null; stderr: Buffer | null }> {
    const collect = (s: NodeJS.ReadableStream | null): Promise<Buffer | null> => {
      if (s === null) return Promise.resolve(null);
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks))));
    };
    const stdin = this.#child.stdin;
    if (stdin && !stdin.writableEnded) {
      // EPIPE when the child exits without reading its input is not an error here (as Python).
      stdin.on('error', () => undefined);
      if (input !== undefined) stdin.end(input);
      else stdin.end();
    }
    const all = Promise.all([collect(this.#child.stdout), collect(this.#child.stderr), this.#exited]).then(
      ([stdout, stderr]) => ({ stdout, stderr }),
    );
    return withTimeout(all, timeout, () => new TimeoutExpired(this.args, timeout ?? 0));
  }

  sendSignal(signal: NodeJS.Signals | number): void {
    if (this.#returncode === null) this.#child.kill(signal);
  }
  terminate(): void {
    this.sendSignal('SIGTERM');
  }
  kill(): void {
    this.sendSignal('SIGKILL');
  }
}

function withTimeout<T>(p: Promise<T>, timeout: number | undefined, onTimeout: () => Error): Promise<T> {
  if (timeout === undefined) return p;
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, timeout));
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
