import { z } from 'zod';
import { describeIssues } from '../../lambdas/core/config';
import { ConfigError, MigrationError } from '../../lambdas/core/errors';
import type { DualWriter, DualWriterOptions } from '../dual-writer';
import type { ShadowReaderOptions } from '../shadow-reader';
import type { TrafficTarget } from '../traffic-router';
import type { WritePrimary } from '../../lambdas/ports/parameters';

/** The router's part the extension uses: the write switches and the read decision. */
export interface MigrationRouter {
  dualWriteEnabled(): boolean;
  route(key: string): TrafficTarget;
  /** Which side is the write primary (V1 when the router has no write switch). */
  writePrimary?(): WritePrimary;
}

export interface WithMigrationOptions extends Omit<DualWriterOptions, 'router'> {
  /** The TrafficRouter (or anything with `dualWriteEnabled()` and `route(key)`). */
  readonly router: MigrationRouter;
  /**
   * Shadow reads of `findUnique` / `findUniqueOrThrow` on the V1 models (whole rows only, never
   * inside a transaction, only while dual-write is on); `false` turns them off.
   * @default { sampleRate: DEFAULT_SHADOW_SAMPLE_RATE }
   */
  readonly shadowReads?:
    false | Pick<ShadowReaderOptions, 'sampleRate' | 'maxInFlight' | 'onMismatch' | 'onError' | 'random'>;
  /**
   * V2 writes in flight at most for the rows of one V1 write (a `createMany` of many rows).
   * @default DEFAULT_MIRROR_CONCURRENCY
   */
  readonly mirrorConcurrency?: number;
}

export const DEFAULT_MIRROR_CONCURRENCY = 4;
/**
 * Metric counting nested writes whose related rows could not be read after the write (V1 failed
 * right after it): their own row is mirrored, the related ones wait for Phase 3's repair.
 */
export const PRISMA_SNAPSHOT_ERROR_METRIC = 'DualWriteRelatedRowsUnknown';

/** What `withMigration` adds to the client, as `$migration`. */
export interface MigrationHandle {
  /** Where a read of this key goes (the router's decision). */
  route(key: string): TrafficTarget;
  /** Whether writes currently go to V2 too. */
  dualWriteEnabled(): boolean;
  /** Which side writes go to first (`v2` after the write switch: Prisma writes are refused then). */
  writePrimary(): WritePrimary;
  /** The DualWriter the extension writes V2 through (e.g. for writes made with raw SQL). */
  readonly writer: DualWriter;
  /** Resolves once the shadow reads started so far have finished (for tests and shutdown). */
  idle(): Promise<void>;
}

/** The backend's Prisma client as the extension sees it (any generated client fits). */
export interface PrismaClientLike {
  $extends(extension: object): unknown;
  $transaction(...args: never[]): Promise<unknown>;
}

/**
 * A write the extension cannot mirror exactly inside a batch `$transaction([...])` (there it
 * cannot read ids first, nor run `…AndReturn`): refused before anything is written. Use an
 * interactive `$transaction(async (tx) => …)` for it.
 */
export class UnsupportedMirroredWriteError extends MigrationError {
  constructor(
    readonly model: string,
    readonly operation: string,
    reason: string,
  ) {
    super(`Cannot mirror ${model}.${operation} to V2: ${reason}`, { model, operation });
  }
}

/**
 * A write of a V1 model while the writes are switched to V2 (V2 is the write primary): V1's
 * Prisma client writes V1, so it would make V1 the primary again behind the switch's back. It
 * is refused before anything is written; write through `$migration.writer` (the DualWriter:
 * V2 first, V1 mirrored from V2) or roll the writes back to V1.
 */
export class PrismaWriteAfterWriteSwitchError extends MigrationError {
  constructor(
    readonly model: string,
    readonly operation: string,
  ) {
    super(
      `Cannot write ${model}.${operation} through V1's Prisma client: the writes are switched to V2 ` +
        '(V2 is the write primary), and nothing was written. Write through $migration.writer ' +
        '(insert/update/delete write V2 first and mirror V1), or roll the writes back to V1',
      { model, operation },
    );
  }
}

const optionsSchema = z.object({
  mirrorConcurrency: z.number().int().min(1).max(64).default(DEFAULT_MIRROR_CONCURRENCY),
});

/** Checks the options (named `ConfigError` on bad ones) and returns the mirror concurrency. */
export function mirrorConcurrencyOf(options: WithMigrationOptions): number {
  const parsed = optionsSchema.safeParse({ mirrorConcurrency: options.mirrorConcurrency });
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'withMigration options');
  const { router } = options;
  for (const method of ['dualWriteEnabled', 'route'] as const) {
    if (typeof router?.[method] !== 'function') {
      throw new ConfigError(
        [{ field: 'router', problem: `must have a ${method}() method (a TrafficRouter)` }],
        'withMigration options',
      );
    }
  }
  return parsed.data.mirrorConcurrency;
}
