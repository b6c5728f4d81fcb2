import { SSMProvider } from '@aws-lambda-powertools/parameters/ssm';
import type { SSMClient } from '@aws-sdk/client-ssm';
import { z } from 'zod';
import { TrafficParameterError } from '../lambdas/core/errors';
import {
  parameterNames,
  WRITE_PRIMARIES,
  type ParameterPort,
  type WritePrimary,
} from '../lambdas/ports/parameters';

/** Which schema a read goes to. */
export type TrafficTarget = 'v1' | 'v2';

/** Raw parameter values as stored; `undefined` means the parameter does not exist. */
export interface TrafficParameterValues {
  percentage?: string;
  dualWrite?: string;
  writePrimary?: string;
}

/**
 * Where the router reads its two parameters from. `fetch` rejects when the store cannot be read
 * (throttled, unreachable); `force` asks the source to bypass any cache it keeps.
 */
export interface TrafficParameterSource {
  fetch(options?: { force?: boolean }): Promise<TrafficParameterValues>;
}

/** What the router tells `onInvalid` when it could not use a parameter and kept its last good value. */
export interface TrafficParameterReport {
  /** The full parameter name (`<prefix>/v2-traffic-percentage`, `<prefix>/dual-write` or `<prefix>/write-primary`). */
  parameter: string;
  problem: TrafficParameterError['problem'];
  /** The rejected value, when there was one. */
  value?: string;
  /** The value the router keeps using: a percentage, whether dual-write is on, or the write primary. */
  kept: number | boolean | WritePrimary;
  /** A named error carrying the same facts; for a failed fetch its `cause` is the store's error. */
  error: TrafficParameterError;
}

export interface TrafficRouterSnapshot {
  percentage: number;
  dualWrite: boolean;
  /** Which side writes go to first (`v1` until the write switch). */
  writePrimary: WritePrimary;
  /** When the last refresh finished (successful or not); undefined before the first. */
  lastRefreshAt?: Date;
  /** The last problem of the most recent refresh; absent when that refresh was clean. */
  lastError?: TrafficParameterError;
}

export interface TrafficRouterOptions {
  /** Parameter prefix; names come from `parameterNames(prefix)`. */
  readonly prefix: string;
  /**
   * How often the background timer reloads the parameters, in milliseconds.
   * @default DEFAULT_REFRESH_MS
   */
  readonly refreshMs?: number;
  /** Called once per parameter that was invalid, missing, or could not be fetched. */
  readonly onInvalid?: (report: TrafficParameterReport) => void;
  /** Called with `TRAFFIC_PARAMETER_INVALID_METRIC` and 1 for every report (e.g. to emit an EMF metric). */
  readonly onMetric?: (name: string, value: number) => void;
}

export interface TrafficRouterSsmOptions extends Omit<TrafficRouterOptions, 'prefix'> {
  readonly prefix: string;
  /**
   * The SSM client Powertools should use.
   * @default a client Powertools creates from the environment
   */
  readonly ssmClient?: SSMClient;
  /**
   * A Powertools provider to share (and its cache) with other readers in the process.
   * @default a new SSMProvider over `ssmClient`
   */
  readonly provider?: SSMProvider;
}

/** Default background refresh interval. */
export const DEFAULT_REFRESH_MS = 10_000;
/** Metric name counting every parameter value the router could not use. */
export const TRAFFIC_PARAMETER_INVALID_METRIC = 'TrafficParameterInvalid';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The routing bucket (0–99) of a key: FNV-1a 32-bit over the key's UTF-8 bytes (lone surrogates
 * encoded as U+FFFD, as `TextEncoder` does), finalised with murmur3's fmix32, unsigned, mod 100.
 * The bytes are produced inline from the char codes, so a call allocates nothing. Any other
 * implementation of this recipe (another backend language) puts every key in the same bucket.
 */
export function bucketOf(key: string): number {
  const s = typeof key === 'string' ? key : String(key);
  const n = s.length;
  let h = FNV_OFFSET;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        h = Math.imul(h ^ (0xf0 | (cp >> 18)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 12) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
        i++;
        continue;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
  }
  // FNV-1a's low bits mix poorly for keys that differ only in their last bytes; mod 100 needs them.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % 100;
}

const percentageSchema = z
  .string()
  .regex(/^(?:0|[1-9][0-9]?|100)$/, 'must be an integer 0–100 written without sign, spaces or leading zeros')
  .transform(Number);
const dualWriteSchema = z.enum(['on', 'off'], { error: 'must be "on" or "off"' });
const writePrimarySchema = z.enum(WRITE_PRIMARIES, { error: 'must be "v1" or "v2"' });

/** Reads the parameters from a parameter port (the local rehearsal's store, or SSM through `SsmParameters`). */
export function parameterPortSource(port: ParameterPort, prefix: string): TrafficParameterSource {
  const names = parameterNames(prefix);
  return {
    async fetch() {
      const [percentage, dualWrite, writePrimary] = await Promise.all([
        port.get(names.trafficPercentage),
        port.get(names.dualWrite),
        port.get(names.writePrimary),
      ]);
      return { percentage, dualWrite, writePrimary };
    },
  };
}

/**
 * Reads the parameters with one SSM GetParameters call through Powertools' `SSMProvider`,
 * whose cache holds values for half the refresh interval: readers sharing the provider within
 * that window are served from the cache, while each background refresh finds it expired and goes
 * to SSM. Powertools caches in whole seconds and treats 0 as its 5 s default, so for intervals
 * under 2 s the cache is cleared before each fetch instead. A forced fetch clears it too.
 */
export function ssmTrafficSource(options: {
  prefix: string;
  refreshMs?: number;
  ssmClient?: SSMClient;
  provider?: SSMProvider;
}): TrafficParameterSource {
  const names = parameterNames(options.prefix);
  const provider =
    options.provider ??
    new SSMProvider(options.ssmClient ? { awsSdkV3Client: options.ssmClient } : undefined);
  const maxAge = Math.floor((options.refreshMs ?? DEFAULT_REFRESH_MS) / 2000);
  return {
    async fetch({ force = false } = {}) {
      if (force || maxAge < 1) provider.clearCache();
      // Fresh option objects each call: Powertools writes its resolved options into them.
      const result = (await provider.getParametersByName(
        { [names.trafficPercentage]: {}, [names.dualWrite]: {}, [names.writePrimary]: {} },
        { maxAge, decrypt: false, throwOnError: false },
      )) as Record<string, unknown>;
      const asString = (v: unknown) => (typeof v === 'string' ? v : undefined);
      return {
        percentage: asString(result[names.trafficPercentage]),
        dualWrite: asString(result[names.dualWrite]),
        writePrimary: asString(result[names.writePrimary]),
      };
    },
  };
}

/**
 * Routes backend reads between V1 and V2 by the `<prefix>/v2-traffic-percentage` parameter and
 * tells writers whether `<prefix>/dual-write` is on and which side `<prefix>/write-primary` says
 * they write first.
 *
 * `route`, `dualWriteEnabled` and `writePrimary` are synchronous and do no I/O: they read the router's last good
 * values, which a background timer refreshes every `refreshMs`. A key (tenant or device id) always
 * lands in the same bucket, and goes to V2 iff its bucket is below the percentage, so raising the
 * percentage only moves keys from V1 to V2. A value that is invalid, missing, or cannot be fetched
 * never changes the routing: the last good value (0 / off / v1 before any) is kept and reported.
 */
export class TrafficRouter {
  readonly refreshMs: number;
  private readonly names: ReturnType<typeof parameterNames>;
  private percentage = 0;
  private dualWrite = false;
  private primary: WritePrimary = 'v1';
  private lastRefreshAt: Date | undefined;
  private lastError: TrafficParameterError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly source: TrafficParameterSource,
    private readonly options: TrafficRouterOptions,
  ) {
    const refreshMs = options.refreshMs ?? DEFAULT_REFRESH_MS;
    if (!Number.isFinite(refreshMs) || refreshMs <= 0) {
      throw new RangeError(
        `TrafficRouter refreshMs must be a positive number of milliseconds, got ${refreshMs}`,
      );
    }
    this.refreshMs = refreshMs;
    this.names = parameterNames(options.prefix);
  }

  /** A router reading SSM through Powertools' parameters utility. */
  static fromSsm(options: TrafficRouterSsmOptions): TrafficRouter {
    return new TrafficRouter(ssmTrafficSource(options), options);
  }

  /** A router reading a parameter port (the local rehearsal's in-memory store, or tests). */
  static fromParameters(port: ParameterPort, options: TrafficRouterOptions): TrafficRouter {
    return new TrafficRouter(parameterPortSource(port, options.prefix), options);
  }

  /** Where the read for `key` goes. Never throws, never waits. */
  route(key: string): TrafficTarget {
    const p = this.percentage;
    if (p <= 0) return 'v1';
    if (p >= 100) return 'v2';
    return bucketOf(key) < p ? 'v2' : 'v1';
  }

  /** Whether writers should also write the other side (V2, or V1 once V2 is the write primary). */
  dualWriteEnabled(): boolean {
    return this.dualWrite;
  }

  /** Which side writers write first: `v1` until the write switch, then `v2`. Never throws, never waits. */
  writePrimary(): WritePrimary {
    return this.primary;
  }

  /** Loads the parameters once (resolves even when they are unusable), then refreshes in the background. */
  async start(): Promise<void> {
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.refreshMs);
      this.timer.unref();
    }
    await this.refresh();
  }

  /** Stops the background refresh; a load already under way still completes. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Loads the parameters now, bypassing the source's cache, after any load already under way. */
  refresh(): Promise<void> {
    return this.enqueue(true);
  }

  snapshot(): TrafficRouterSnapshot {
    return {
      percentage: this.percentage,
      dualWrite: this.dualWrite,
      writePrimary: this.primary,
      lastRefreshAt: this.lastRefreshAt,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  private tick(): void {
    // A slow store must not pile up loads: skip this tick, the next one will try again.
    if (this.inFlight) return;
    void this.enqueue(false);
  }

  private enqueue(force: boolean): Promise<void> {
    const run = (this.inFlight ?? Promise.resolve()).then(() => this.load(force));
    const tracked: Promise<void> = run.finally(() => {
      if (this.inFlight === tracked) this.inFlight = undefined;
    });
    this.inFlight = tracked;
    return tracked;
  }

  private async load(force: boolean): Promise<void> {
    const problems: TrafficParameterReport[] = [];
    let values: TrafficParameterValues | undefined;
    try {
      values = await this.source.fetch({ force });
    } catch (error) {
      const reason = `could not be fetched (${describe(error)})`;
      problems.push(
        this.problem(this.names.trafficPercentage, 'fetch-failed', undefined, this.percentage, reason, error),
        this.problem(this.names.dualWrite, 'fetch-failed', undefined, this.dualWrite, reason, error),
        this.problem(this.names.writePrimary, 'fetch-failed', undefined, this.primary, reason, error),
      );
    }
    if (values) {
      const percentage = this.parse(
        this.names.trafficPercentage,
        values.percentage,
        percentageSchema,
        this.percentage,
      );
      if (typeof percentage === 'number') this.percentage = percentage;
      else problems.push(percentage);
      const dualWrite = this.parse(this.names.dualWrite, values.dualWrite, dualWriteSchema, this.dualWrite);
      if (typeof dualWrite === 'string') this.dualWrite = dualWrite === 'on';
      else problems.push(dualWrite);
      const primary = this.parse(this.names.writePrimary, values.writePrimary, writePrimarySchema, this.primary);
      if (typeof primary === 'string') this.primary = primary;
      else problems.push(primary);
    }
    this.lastRefreshAt = new Date();
    this.lastError = problems.at(-1)?.error;
    for (const report of problems) {
      this.notify(() => this.options.onInvalid?.(report));
      this.notify(() => this.options.onMetric?.(TRAFFIC_PARAMETER_INVALID_METRIC, 1));
    }
  }

  private parse<T>(
    parameter: string,
    raw: string | undefined,
    schema: z.ZodType<T, string>,
    kept: number | boolean | WritePrimary,
  ): T | TrafficParameterReport {
    if (raw === undefined) return this.problem(parameter, 'missing', undefined, kept, 'does not exist');
    const parsed = schema.safeParse(raw);
    if (parsed.success) return parsed.data;
    const reason = `${JSON.stringify(raw)} ${parsed.error.issues[0]?.message ?? 'is not valid'}`;
    return this.problem(parameter, 'invalid', raw, kept, reason);
  }

  private problem(
    parameter: string,
    problem: TrafficParameterError['problem'],
    value: string | undefined,
    kept: number | boolean | WritePrimary,
    reason: string,
    cause?: unknown,
  ): TrafficParameterReport {
    const error = new TrafficParameterError(
      parameter,
      problem,
      value,
      kept,
      reason,
      cause === undefined ? undefined : { cause },
    );
    return { parameter, problem, ...(value === undefined ? {} : { value }), kept, error };
  }

  private notify(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      // A faulty reporting hook must not stop routing updates; it still surfaces as a process warning.
      process.emitWarning(
        error instanceof Error ? error : new Error(String(error)),
        'TrafficRouterCallbackWarning',
      );
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
