import { setTimeout as sleepMs } from 'node:timers/promises';
import {
  CreateDBClusterSnapshotCommand,
  CreateDBSnapshotCommand,
  DescribeDBClusterSnapshotsCommand,
  DescribeDBClustersCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  type RDSClient,
} from '@aws-sdk/client-rds';
import { SNAPSHOT_ID_PREFIX } from '../../../lib/runtime-contract';
import { BackupError } from '../../core/errors';
import type { BackupPort, BackupRef, BackupStatus, BackupVerification } from '../../ports/backup';

/** What to snapshot: an RDS DB instance or an Aurora cluster. */
export type RdsSnapshotSource = { instanceId: string } | { clusterId: string };

export type RdsSnapshotBackupOptions = RdsSnapshotSource & {
  /**
   * Whether the source's storage is encrypted, which the snapshot then must be. When not given,
   * `verify` asks RDS (DescribeDBInstances / DescribeDBClusters on the source).
   */
  sourceEncrypted?: boolean;
  /**
   * Calls per Describe request when RDS throttles it.
   * @default DEFAULT_DESCRIBE_ATTEMPTS
   */
  maxAttempts?: number;
  /**
   * Delay before the first retry; it doubles per retry (with full jitter).
   * @default 500
   */
  baseDelayMs?: number;
  /** Injected for tests. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => Date;
  random?: () => number;
};

/** Calls per Describe request when RDS throttles it. */
export const DEFAULT_DESCRIBE_ATTEMPTS = 4;

/** RDS and Aurora snapshot identifiers: 1–255 characters. */
export const MAX_SNAPSHOT_ID_LENGTH = 255;

/** Snapshot states that end in `available` if nothing goes wrong. */
const CREATING_STATES = new Set(['creating', 'backing-up', 'pending', 'copying', 'modifying', 'upgrading']);

/** Snapshot states from which the snapshot will never become available. */
const FAILED_STATES = new Set(['failed', 'deleted', 'deleting', 'error']);

/** `20240102-030405-678`: UTC, millisecond resolution so two starts never collide. */
function stamp(now: Date): string {
  const iso = now.toISOString(); // 2024-01-02T03:04:05.678Z
  return `${iso.slice(0, 10).replace(/-/g, '')}-${iso.slice(11, 19).replace(/:/g, '')}-${iso.slice(20, 23)}`;
}

/**
 * The snapshot identifier for `label` at `now`: `<SNAPSHOT_ID_PREFIX><label>-<stamp>`, the
 * label lower-cased and reduced to letters, digits and single hyphens, cut so the whole id
 * fits RDS's rules (starts with a letter, at most 255 characters, no `--`, no trailing `-`).
 */
export function snapshotId(label: string, now: Date): string {
  const suffix = `-${stamp(now)}`;
  const room = MAX_SNAPSHOT_ID_LENGTH - SNAPSHOT_ID_PREFIX.length - suffix.length;
  const clean =
    label
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, room)
      .replace(/-+$/, '') || 'backup';
  return `${SNAPSHOT_ID_PREFIX}${clean}${suffix}`;
}

function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? name : undefined;
}

function isThrottling(error: unknown): boolean {
  const name = errorName(error) ?? '';
  const status = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return (
    /throttl/i.test(name) ||
    name === 'RequestLimitExceeded' ||
    name === 'TooManyRequestsException' ||
    status === 429
  );
}

function isNotFound(error: unknown): boolean {
  const name = errorName(error);
  return name === 'DBSnapshotNotFoundFault' || name === 'DBClusterSnapshotNotFoundFault';
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** The fields of an instance or cluster snapshot that `status` and `verify` read. */
interface SnapshotFacts {
  id: string;
  arn?: string;
  status?: string;
  source?: string;
  createTime?: Date;
  engine?: string;
  engineVersion?: string;
  allocatedStorageGiB?: number;
  percentProgress?: number;
  encrypted?: boolean;
  kmsKeyId?: string;
}

/**
 * The backup port over RDS snapshots: a DB snapshot of an RDS instance (`rds-snapshot`) or a
 * cluster snapshot of an Aurora cluster (`aurora-snapshot`). `start` only asks RDS to create
 * it; the state machine polls `status` and then calls `verify`. Snapshot ids start with
 * SNAPSHOT_ID_PREFIX, the only ones the orchestrator's IAM role may create and describe.
 */
export class RdsSnapshotBackup implements BackupPort {
  private readonly source: { kind: 'rds-snapshot'; id: string } | { kind: 'aurora-snapshot'; id: string };
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly now: () => Date;
  private readonly random: () => number;

  constructor(
    private readonly client: RDSClient,
    private readonly options: RdsSnapshotBackupOptions,
  ) {
    const instanceId = 'instanceId' in options ? options.instanceId : undefined;
    const clusterId = 'clusterId' in options ? options.clusterId : undefined;
    if (!instanceId === !clusterId) {
      throw new BackupError('RdsSnapshotBackup needs exactly one of instanceId and clusterId', {
        instanceId,
        clusterId,
      });
    }
    this.source = instanceId
      ? { kind: 'rds-snapshot', id: instanceId }
      : { kind: 'aurora-snapshot', id: clusterId! };
    this.maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_DESCRIBE_ATTEMPTS);
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.sleep = options.sleep ?? ((ms) => sleepMs(ms));
    this.now = options.now ?? (() => new Date());
    this.random = options.random ?? Math.random;
  }

  private get isCluster(): boolean {
    return this.source.kind === 'aurora-snapshot';
  }

  async start(label: string): Promise<BackupRef> {
    const id = snapshotId(label, this.now());
    const tags = [
      { Key: 'created-by', Value: 'iot-v2-migration' },
      { Key: 'migration-label', Value: label.replace(/[^\p{L}\p{N} _.:/=+\-@]/gu, '_').slice(0, 256) },
    ];
    let arn: string | undefined;
    try {
      if (this.isCluster) {
        const out = await this.client.send(
          new CreateDBClusterSnapshotCommand({
            DBClusterIdentifier: this.source.id,
            DBClusterSnapshotIdentifier: id,
            Tags: tags,
          }),
        );
        arn = out.DBClusterSnapshot?.DBClusterSnapshotArn;
      } else {
        const out = await this.client.send(
          new CreateDBSnapshotCommand({
            DBInstanceIdentifier: this.source.id,
            DBSnapshotIdentifier: id,
            Tags: tags,
          }),
        );
        arn = out.DBSnapshot?.DBSnapshotArn;
      }
    } catch (cause) {
      throw new BackupError(
        `creating snapshot ${id} of ${this.sourceLabel()} failed: ${describe(cause)}`,
        { snapshot: id, source: this.source.id, awsError: errorName(cause) },
        { cause },
      );
    }
    if (!arn) {
      const facts = await this.find(id);
      arn = facts?.arn;
    }
    if (!arn) {
      throw new BackupError(
        `RDS accepted snapshot ${id} of ${this.sourceLabel()} but reports no ARN for it`,
        {
          snapshot: id,
          source: this.source.id,
        },
      );
    }
    return { id, kind: this.source.kind, location: arn };
  }

  async status(ref: BackupRef): Promise<BackupStatus> {
    this.checkKind(ref);
    const facts = await this.find(ref.id);
    if (!facts) return 'failed';
    const state = (facts.status ?? '').toLowerCase();
    if (state === 'available') return 'available';
    if (FAILED_STATES.has(state) || state.startsWith('incompatible')) return 'failed';
    if (CREATING_STATES.has(state)) return 'creating';
    // A state RDS added after this was written: keep polling; the wait's deadline bounds it.
    return 'creating';
  }

  async verify(ref: BackupRef, expectedRowCounts: Record<string, number>): Promise<BackupVerification> {
    this.checkKind(ref);
    const facts = await this.find(ref.id);
    if (!facts) {
      throw new BackupError(`snapshot ${ref.id} does not exist`, { backup: ref.id, kind: ref.kind });
    }
    const problems: string[] = [];
    if (facts.status !== 'available')
      problems.push(`its status is ${facts.status ?? 'unknown'}, not available`);
    if (facts.source !== this.source.id) {
      problems.push(
        `it is a snapshot of ${facts.source ?? 'an unknown source'}, not of ${this.sourceLabel()}`,
      );
    }
    if (
      !this.isCluster &&
      !(typeof facts.allocatedStorageGiB === 'number' && facts.allocatedStorageGiB > 0)
    ) {
      problems.push(`its allocated storage is ${facts.allocatedStorageGiB ?? 'not reported'}`);
    }
    if (facts.percentProgress !== undefined && facts.percentProgress !== 100) {
      problems.push(`it is ${facts.percentProgress}% complete`);
    }
    const sourceEncrypted = this.options.sourceEncrypted ?? (await this.isSourceEncrypted());
    if (sourceEncrypted && !facts.encrypted) {
      problems.push(`it is not encrypted although ${this.sourceLabel()} is`);
    }
    if (problems.length > 0) {
      throw new BackupError(`snapshot ${ref.id} is not usable: ${problems.join('; ')}`, {
        backup: ref.id,
        kind: ref.kind,
        snapshotArn: facts.arn,
        problems,
      });
    }
    return {
      evidence: {
        snapshotArn: facts.arn ?? ref.location,
        source: facts.source,
        createTime: facts.createTime?.toISOString(),
        engine: facts.engine,
        engineVersion: facts.engineVersion,
        allocatedStorageGiB: facts.allocatedStorageGiB,
        encrypted: facts.encrypted ?? false,
        kmsKeyId: facts.kmsKeyId,
        // A snapshot cannot be counted without restoring it: these are V1's counts when it began.
        rowCountsAtStart: expectedRowCounts,
      },
    };
  }

  private sourceLabel(): string {
    return this.isCluster ? `Aurora cluster ${this.source.id}` : `RDS instance ${this.source.id}`;
  }

  private checkKind(ref: BackupRef): void {
    if (ref.kind !== this.source.kind) {
      throw new BackupError(`backup ${ref.id} is a ${ref.kind}, not a ${this.source.kind}`, {
        backup: ref.id,
        kind: ref.kind,
      });
    }
  }

  /** The snapshot's facts, or undefined when RDS does not know it. */
  private async find(id: string): Promise<SnapshotFacts | undefined> {
    try {
      if (this.isCluster) {
        const out = await this.withRetry(`DescribeDBClusterSnapshots ${id}`, () =>
          this.client.send(new DescribeDBClusterSnapshotsCommand({ DBClusterSnapshotIdentifier: id })),
        );
        const s = out.DBClusterSnapshots?.[0];
        if (!s) return undefined;
        return {
          id,
          arn: s.DBClusterSnapshotArn,
          status: s.Status,
          source: s.DBClusterIdentifier,
          createTime: s.SnapshotCreateTime,
          engine: s.Engine,
          engineVersion: s.EngineVersion,
          allocatedStorageGiB: s.AllocatedStorage,
          percentProgress: s.PercentProgress,
          encrypted: s.StorageEncrypted,
          kmsKeyId: s.KmsKeyId,
        };
      }
      const out = await this.withRetry(`DescribeDBSnapshots ${id}`, () =>
        this.client.send(new DescribeDBSnapshotsCommand({ DBSnapshotIdentifier: id })),
      );
      const s = out.DBSnapshots?.[0];
      if (!s) return undefined;
      return {
        id,
        arn: s.DBSnapshotArn,
        status: s.Status,
        source: s.DBInstanceIdentifier,
        createTime: s.SnapshotCreateTime,
        engine: s.Engine,
        engineVersion: s.EngineVersion,
        allocatedStorageGiB: s.AllocatedStorage,
        percentProgress: s.PercentProgress,
        encrypted: s.Encrypted,
        kmsKeyId: s.KmsKeyId,
      };
    } catch (cause) {
      if (isNotFound(cause)) return undefined;
      throw cause;
    }
  }

  private async isSourceEncrypted(): Promise<boolean> {
    if (this.isCluster) {
      const out = await this.withRetry(`DescribeDBClusters ${this.source.id}`, () =>
        this.client.send(new DescribeDBClustersCommand({ DBClusterIdentifier: this.source.id })),
      );
      return out.DBClusters?.[0]?.StorageEncrypted ?? false;
    }
    const out = await this.withRetry(`DescribeDBInstances ${this.source.id}`, () =>
      this.client.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: this.source.id })),
    );
    return out.DBInstances?.[0]?.StorageEncrypted ?? false;
  }

  /**
   * Runs a Describe call, retrying throttling with jittered exponential backoff. Not-found
   * faults pass through for the caller to read; anything else becomes a BackupError.
   */
  private async withRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (cause) {
        if (isNotFound(cause)) throw cause;
        if (isThrottling(cause) && attempt < this.maxAttempts) {
          await this.sleep(Math.round(this.random() * this.baseDelayMs * 2 ** (attempt - 1)));
          continue;
        }
        throw new BackupError(
          `${what} failed${attempt > 1 ? ` after ${attempt} attempts` : ''}: ${describe(cause)}`,
          { source: this.source.id, awsError: errorName(cause), attempts: attempt },
          { cause },
        );
      }
    }
  }
}
