// What Pool's AsyncResult and the executor's Future share: a result settled from outside, that is
// a thenable, can be waited for with a timeout, and never becomes an unhandled rejection when
// nobody awaits it.
import { invalidArgType, TimeoutError } from './errors';

/** A timeout option in ms: undefined/null/Infinity = wait forever; negative = 0. */
export function checkTimeout(timeout: unknown): number | undefined {
  if (timeout === undefined || timeout === null) return undefined;
  if (typeof timeout !== 'number' || Number.isNaN(timeout)) throw invalidArgType('timeout', 'of type number', timeout);
  if (timeout === Infinity) return undefined;
  return Math.max(0, timeout);
}

export class DeferredResult<R> implements PromiseLike<R> {
  readonly #promise: Promise<R>;
  // Typed without R so that a Future<number> is a Future<unknown> (no contravariant members).
  #resolve!: (v: unknown) => void;
  #reject!: (e: unknown) => void;

  protected constructor() {
    this.#promise = new Promise<R>((res, rej) => {
      this.#resolve = res as (v: unknown) => void;
      this.#reject = rej;
    });
    this.#promise.catch(() => {}); // a result nobody awaits is not an unhandled rejection
  }

  protected fulfil(v: unknown): void {
    this.#resolve(v);
  }
  protected fail(e: unknown): void {
    this.#reject(e);
  }
  protected get promise(): Promise<R> {
    return this.#promise;
  }

  /** Resolves when the result is settled, either way (never rejects). */
  protected settled(): Promise<void> {
    return this.#promise.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Resolves when the result is settled; rejects with TimeoutError after `ms` if it is not. */
  protected within(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TimeoutError()), ms);
      void this.settled().then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  then<A = R, B = never>(
    onfulfilled?: ((value: R) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.#promise.then(onfulfilled, onrejected);
  }

  catch<B = never>(onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<R | B> {
    return this.#promise.catch(onrejected);
  }

  finally(onfinally?: (() => void) | null): Promise<R> {
    return this.#promise.finally(onfinally);
  }
}
