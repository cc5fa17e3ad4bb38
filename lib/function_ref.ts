// Functions by reference: how a target reaches a child that is a fresh Node process (spawn,
// forkserver), where no copy of the parent's heap exists. CPython pickles a function as
// (module, qualified name) and the child imports it; here a function travels as
// { module: <absolute file URL>, name: <export name> } and the child imports the module.
//
// What can be referenced (checked in the parent, so the error reaches the caller of start()):
//   - a function exported by a CommonJS module (found in require.cache by identity);
//   - a function exported by an ES module (its defining script is read from V8; the module's
//     source must export it under its own name: `export function f`, `export const f = ...`,
//     `export { f }`, `export { f as g }`, `export default f`);
//   - an explicit reference: { module, name }, 'path/to/file.js#name' (relative to the cwd),
//     or a function marked with exportRef(fn, import.meta.url, 'name').
// Anything else (closures, class methods, bound functions) -> NotReferenceableError
// (ERR_MP_NOT_REFERENCEABLE) saying how to export it. Under the fork start method none of this
// applies: the child runs the closure from its copy of the heap.
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { NotReferenceableError, invalidArgType } from './errors';
import { native } from './native';

export interface FunctionRef {
  /** Absolute file: URL (or a bare package specifier) of the module that exports the function. */
  readonly module: string;
  /** The export's name ('default' for a default export / CommonJS `module.exports = fn`). */
  readonly name: string;
}

const kRef = Symbol.for('multiproc.functionRef');

/** Marks `fn` as the export `name` of `module` (a URL or path), for the cases the lookup cannot see. */
export function exportRef<F extends (...args: never[]) => unknown>(fn: F, module: string | URL, name: string = fn.name): F {
  if (typeof fn !== 'function') throw invalidArgType('fn', 'a function', fn);
  if (typeof name !== 'string' || name === '') throw invalidArgType('name', 'a non-empty string', name);
  Object.defineProperty(fn, kRef, { value: { module: moduleUrl(String(module)), name }, configurable: true });
  return fn;
}

export function isFunctionRef(v: unknown): v is FunctionRef {
  return (
    typeof v === 'object' && v !== null && typeof (v as FunctionRef).module === 'string' && typeof (v as FunctionRef).name === 'string'
  );
}

/** 'file.js#name' / { module, name } / an exported function -> a reference, or null for a non-function. */
export function toFunctionRef(target: unknown, method: string): FunctionRef {
  if (typeof target === 'string') return parseRefString(target);
  if (isFunctionRef(target) && typeof target !== 'function') return { module: moduleUrl(target.module), name: target.name };
  if (typeof target !== 'function') throw invalidArgType('target', 'a function or a { module, name } reference', target);
  const fn = target as ((...a: unknown[]) => unknown) & { [kRef]?: FunctionRef };
  const marked = fn[kRef];
  if (marked !== undefined) return marked;
  const cached = found.get(fn);
  if (cached !== undefined) return cached;
  const origin = native.functionOrigin(fn);
  const ref = (origin && (fromCommonJs(fn, origin.script) ?? fromEsmSource(fn, origin.script))) || fromAnyCommonJs(fn);
  if (ref === null) throw notReferenceable(fn, origin, method);
  found.set(fn, ref);
  return ref;
}

const found = new WeakMap<object, FunctionRef>();

function parseRefString(s: string): FunctionRef {
  const hash = s.lastIndexOf('#');
  if (hash <= 0 || hash === s.length - 1) {
    throw new NotReferenceableError(`a function reference string looks like 'path/to/module.js#exportName', not '${s}'`);
  }
  return { module: moduleUrl(s.slice(0, hash)), name: s.slice(hash + 1) };
}

/** Absolute file URL for a path or URL; a bare package specifier is resolved from the cwd. */
function moduleUrl(spec: string): string {
  if (spec.startsWith('file:') || spec.startsWith('node:') || spec.startsWith('data:')) return spec;
  if (path.isAbsolute(spec) || spec.startsWith('.')) return pathToFileURL(path.resolve(spec)).href;
  try {
    return pathToFileURL(Module.createRequire(path.join(process.cwd(), 'noop.js')).resolve(spec)).href;
  } catch {
    return spec; // ESM-only package: the child imports it by name
  }
}

function scriptPath(script: string): string | null {
  if (script.startsWith('file:')) return fileURLToPath(script);
  return path.isAbsolute(script) ? script : null;
}

type CachedModule = { exports?: unknown };
const requireCache = (): Record<string, CachedModule | undefined> =>
  (Module as unknown as { _cache: Record<string, CachedModule | undefined> })._cache;

function exportName(exports: unknown, fn: unknown): string | null {
  if (exports === fn) return 'default';
  if ((typeof exports === 'object' || typeof exports === 'function') && exports !== null) {
    for (const k of Object.keys(exports)) {
      try {
        if ((exports as Record<string, unknown>)[k] === fn) return k;
      } catch {
        // a throwing getter: not this one
      }
    }
  }
  return null;
}

function fromCommonJs(fn: unknown, script: string): FunctionRef | null {
  const file = scriptPath(script);
  if (file === null) return null;
  const m = requireCache()[file];
  if (m === undefined) return null;
  const name = exportName(m.exports, fn);
  return name === null ? null : { module: pathToFileURL(file).href, name };
}

/** A function re-exported by another CommonJS module. */
function fromAnyCommonJs(fn: unknown): FunctionRef | null {
  const cache = requireCache();
  for (const file of Object.keys(cache)) {
    const name = exportName(cache[file]?.exports, fn);
    if (name !== null) return { module: pathToFileURL(file).href, name };
  }
  return null;
}

const sources = new Map<string, string | null>();
function readSource(file: string): string | null {
  let s = sources.get(file);
  if (s === undefined) {
    try {
      s = fs.readFileSync(file, 'utf8');
    } catch {
      s = null;
    }
    sources.set(file, s);
  }
  return s;
}

const escape = (s: string): string => s.replace(/[$]/g, '\\$');

/** The export name under which an ES module's source exports its binding `local`, if it does. */
export function esmExportName(source: string, local: string): string | null {
  const id = escape(local);
  const decl = new RegExp(
    `(^|[;}\\s])export\\s+(?:(?:async\\s+)?function\\s*\\*?\\s*${id}\\s*\\(|(?:const|let|var)\\s+${id}\\s*=|class\\s+${id}[\\s{])`,
    'm',
  );
  if (decl.test(source)) return local;
  if (new RegExp(`(^|[;}\\s])export\\s+default\\s+(?:async\\s+)?(?:function\\s*\\*?\\s*${id}\\s*\\(|${id}\\s*;?\\s*$)`, 'm').test(source)) {
    return 'default';
  }
  const lists = source.matchAll(/(?:^|[;}\s])export\s*\{([^}]*)\}(?!\s*from)/gm);
  for (const m of lists) {
    for (const part of (m[1] as string).split(',')) {
      const [a, b] = part.trim().split(/\s+as\s+/);
      if (a === local) return (b ?? a).trim().replace(/^["']|["']$/g, '');
    }
  }
  return null;
}

function fromEsmSource(fn: { name: string }, script: string): FunctionRef | null {
  if (fn.name === '' || fn.name.includes(' ')) return null; // anonymous or 'bound f'
  const file = scriptPath(script);
  if (file === null) return null;
  const source = readSource(file);
  if (source === null) return null;
  const name = esmExportName(source, fn.name);
  return name === null ? null : { module: pathToFileURL(file).href, name };
}

function notReferenceable(
  fn: { name: string },
  origin: { script: string; line: number; column: number } | null,
  method: string,
): NotReferenceableError {
  const src = Function.prototype.toString.call(fn);
  const arrow = !/^(async\s*)?(function\b|class\b)/.test(src) && /^(async\s*)?(\([^)]*\)|[\w$]+)\s*=>/.test(src);
  const what = arrow ? 'an arrow function' : fn.name ? `function '${fn.name}'` : 'an anonymous function';
  const where = origin ? ` (defined at ${origin.script}:${origin.line + 1}:${origin.column + 1})` : '';
  const eg = fn.name || 'work';
  return new NotReferenceableError(
    `${what}${where} cannot be sent to a '${method}' child: a '${method}' child is a fresh Node process ` +
      'that imports the function by module and export name. Export it from the top level of its module ' +
      `(export function ${eg}(...) {...} or module.exports.${eg} = ${eg}) and pass the exported function, ` +
      `or pass a reference: { module: '/path/to/module.js', name: '${eg}' } or '/path/to/module.js#${eg}'. ` +
      'Closures cannot travel: pass the values they capture as args. The fork start method runs closures: ' +
      'run the program with `npx multiproc app.js` (node --single-threaded) to make fork the default, or use getContext("fork").',
  );
}

/**
 * The compiled (dist/) directory of this library: what a fresh Node process loads. Under a
 * TypeScript runner (the test suite) this module is lib/*.ts, and the build sits beside it.
 */
export function libraryDir(): string {
  if (path.basename(__dirname) === 'lib') {
    const dist = path.join(__dirname, '..', 'dist');
    if (fs.existsSync(path.join(dist, 'index.js'))) return dist;
  }
  return __dirname;
}

/** A reference to a function exported by one of this library's own modules ('pool', 'popen/spawn_main'...). */
export function internalRef(moduleBase: string, name: string): FunctionRef {
  return { module: pathToFileURL(path.join(libraryDir(), `${moduleBase}.js`)).href, name };
}

/**
 * A reference for `fn` if a CommonJS module in require.cache exports it, else null. A forked
 * process finds such a function in its copy of the cache without importing anything
 * (`requireRef`), so this is what the fork start method uses.
 */
export function commonJsRef(fn: unknown): FunctionRef | null {
  if (typeof fn !== 'function') return null;
  const origin = native.functionOrigin(fn);
  return (origin && fromCommonJs(fn, origin.script)) || null;
}

/**
 * The function a CommonJS reference (commonJsRef) names, synchronously: from this process's
 * module cache, or loaded now with Node's own require (never a custom loader's import()).
 */
export function requireRef(ref: FunctionRef): ((...a: unknown[]) => unknown) | null {
  if (!ref.module.startsWith('file:')) return null;
  const file = fileURLToPath(ref.module);
  let ex: unknown = requireCache()[file]?.exports;
  if (ex === undefined) {
    try {
      ex = Module.createRequire(file)(file);
    } catch {
      return null;
    }
  }
  const fn = ref.name === 'default' && typeof ex === 'function' ? ex : (ex as Record<string, unknown> | undefined)?.[ref.name];
  return typeof fn === 'function' ? (fn as (...a: unknown[]) => unknown) : null;
}

// ---- the receiving side

const resolved = new Map<string, Promise<(...a: unknown[]) => unknown>>();

/** Imports the module and returns the function (cached per reference). */
export function resolveFunctionRef(ref: FunctionRef): Promise<(...a: unknown[]) => unknown> {
  const key = `${ref.module}#${ref.name}`;
  let p = resolved.get(key);
  if (p === undefined) {
    p = importFunction(ref);
    resolved.set(key, p);
    p.catch(() => resolved.delete(key));
  }
  return p;
}

async function importFunction(ref: FunctionRef): Promise<(...a: unknown[]) => unknown> {
  // A CommonJS module (this library's own entry points among them) comes from require: already
  // in the cache in a forkserver child, and far cheaper than import(), whose first use of the
  // ES module loader on a CommonJS file costs ~40 ms (a forkserver Pool's start-up).
  const viaRequire = requireRef(ref);
  if (viaRequire !== null) return viaRequire;
  let ns: Record<string, unknown>;
  try {
    ns = (await import(ref.module)) as Record<string, unknown>;
  } catch (e) {
    throw new NotReferenceableError(`cannot import ${ref.module} to find '${ref.name}': ${(e as Error).message}`, { cause: e });
  }
  let fn = ns[ref.name];
  const def = ns.default;
  if (typeof fn !== 'function' && (typeof def === 'object' || typeof def === 'function') && def !== null) {
    fn = (def as Record<string, unknown>)[ref.name];
  }
  if (typeof fn !== 'function') {
    throw new NotReferenceableError(`module ${ref.module} has no exported function '${ref.name}'`);
  }
  return fn as (...a: unknown[]) => unknown;
}
