import type { ParameterPort } from '../../ports/parameters';

type Operation = 'get' | 'put';

/**
 * The parameter port in memory, for the local rehearsal and tests. It counts calls and can be
 * told to fail the next calls, so callers' handling of a throttled or unreachable store is testable.
 */
export class MemoryParameters implements ParameterPort {
  private readonly values = new Map<string, string>();
  private readonly failures: { op: Operation | 'any'; error: Error; remaining: number }[] = [];
  /** How many times each operation was called (failed calls included). */
  readonly calls = { get: 0, put: 0 };

  constructor(initial: Record<string, string> = {}) {
    for (const [name, value] of Object.entries(initial)) this.values.set(name, value);
  }

  async get(name: string): Promise<string | undefined> {
    this.calls.get += 1;
    this.failIfInjected('get');
    return this.values.get(name);
  }

  async put(name: string, value: string): Promise<void> {
    this.calls.put += 1;
    this.failIfInjected('put');
    this.values.set(name, value);
  }

  /** Removes a parameter, as if it had been deleted from the store. */
  delete(name: string): void {
    this.values.delete(name);
  }

  /** A copy of every stored parameter. */
  entries(): Record<string, string> {
    return Object.fromEntries(this.values);
  }

  /**
   * Makes the next `times` calls of `op` (default: any operation, once) reject with `error`.
   * Failures queue up in the order they were injected.
   */
  failNext(error: Error, options: { op?: Operation | 'any'; times?: number } = {}): void {
    this.failures.push({ op: options.op ?? 'any', error, remaining: options.times ?? 1 });
  }

  private failIfInjected(op: Operation): void {
    const failure = this.failures.find((f) => f.op === 'any' || f.op === op);
    if (!failure) return;
    failure.remaining -= 1;
    if (failure.remaining <= 0) this.failures.splice(this.failures.indexOf(failure), 1);
    throw failure.error;
  }
}
