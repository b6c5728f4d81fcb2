import {
  CreateDBClusterSnapshotCommand,
  CreateDBSnapshotCommand,
  DBClusterSnapshotNotFoundFault,
  DBSnapshotAlreadyExistsFault,
  DBSnapshotNotFoundFault,
  DescribeDBClusterSnapshotsCommand,
  DescribeDBClustersCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  RDSClient,
  RDSServiceException,
  type DBClusterSnapshot,
  type DBSnapshot,
} from '@aws-sdk/client-rds';
import { mockClient } from 'aws-sdk-client-mock';
import {
  MAX_SNAPSHOT_ID_LENGTH,
  RdsSnapshotBackup,
  snapshotId,
  type RdsSnapshotBackupOptions,
} from '../../../../lambdas/adapters/aws/rds-backup';
import { BackupError } from '../../../../lambdas/core/errors';
import { SNAPSHOT_ID_PREFIX } from '../../../../lib/runtime-contract';
import type { BackupRef } from '../../../../lambdas/ports/backup';

const rds = mockClient(RDSClient);
beforeEach(() => rds.reset());
afterAll(() => rds.restore());

const NOW = new Date('2024-03-05T06:07:08.009Z');
const STAMP = '20240305-060708-009';
const SNAP_ID = `${SNAPSHOT_ID_PREFIX}v1-before-migration-${STAMP}`;
const INSTANCE_ARN = `arn:aws:rds:eu-west-1:123456789012:snapshot:${SNAP_ID}`;
const CLUSTER_ARN = `arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:${SNAP_ID}`;
const COUNTS = { users: 3, devices: 5, device_data: 100, alerts: 2 };

function backup(
  source: { instanceId: string } | { clusterId: string },
  extra: Partial<RdsSnapshotBackupOptions> = {},
) {
  const sleeps: number[] = [];
  const port = new RdsSnapshotBackup(new RDSClient({ region: 'eu-west-1' }), {
    ...source,
    now: () => NOW,
    random: () => 1,
    baseDelayMs: 10,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...extra,
  } as RdsSnapshotBackupOptions);
  return { port, sleeps };
}

const instanceRef: BackupRef = { id: SNAP_ID, kind: 'rds-snapshot', location: INSTANCE_ARN };
const clusterRef: BackupRef = { id: SNAP_ID, kind: 'aurora-snapshot', location: CLUSTER_ARN };

function dbSnapshot(overrides: Partial<DBSnapshot> = {}): DBSnapshot {
  return {
    DBSnapshotIdentifier: SNAP_ID,
    DBSnapshotArn: INSTANCE_ARN,
    DBInstanceIdentifier: 'iot-v1',
    Status: 'available',
    SnapshotCreateTime: new Date('2024-03-05T06:10:00Z'),
    Engine: 'postgres',
    EngineVersion: '16.3',
    AllocatedStorage: 20,
    PercentProgress: 100,
    Encrypted: true,
    KmsKeyId: 'arn:aws:kms:eu-west-1:123456789012:key/abc',
    ...overrides,
  };
}

function clusterSnapshot(overrides: Partial<DBClusterSnapshot> = {}): DBClusterSnapshot {
  return {
    DBClusterSnapshotIdentifier: SNAP_ID,
    DBClusterSnapshotArn: CLUSTER_ARN,
    DBClusterIdentifier: 'iot-v1-cluster',
    Status: 'available',
    SnapshotCreateTime: new Date('2024-03-05T06:10:00Z'),
    Engine: 'aurora-postgresql',
    EngineVersion: '15.4',
    AllocatedStorage: 1,
    PercentProgress: 100,
    StorageEncrypted: true,
    ...overrides,
  };
}

const throttled = () =>
  new RDSServiceException({
    name: 'Throttling',
    $fault: 'client',
    message: 'Rate exceeded',
    $metadata: { httpStatusCode: 400 },
  });

async function rejection(promise: Promise<unknown>): Promise<BackupError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BackupError);
  return error as BackupError;
}

describe('snapshotId', () => {
  it('prefixes, sanitizes the label and appends a UTC stamp', () => {
    expect(snapshotId('v1_before_migration', NOW)).toBe(SNAP_ID);
    expect(snapshotId('  Über--Label!! ', NOW)).toBe(`${SNAPSHOT_ID_PREFIX}ber-label-${STAMP}`);
    expect(snapshotId('___', NOW)).toBe(`${SNAPSHOT_ID_PREFIX}backup-${STAMP}`);
  });

  it('keeps every id within the RDS identifier rules, however long or odd the label', () => {
    for (const label of ['a'.repeat(400), `${'x'.repeat(220)}-${'y'.repeat(50)}`, '--a--b--', '9lives']) {
      const id = snapshotId(label, NOW);
      expect(id.startsWith(SNAPSHOT_ID_PREFIX)).toBe(true);
      expect(id.length).toBeLessThanOrEqual(MAX_SNAPSHOT_ID_LENGTH);
      expect(id).toMatch(/^[a-z][a-z0-9-]*[a-z0-9]$/);
      expect(id).not.toContain('--');
    }
  });
});

describe('RdsSnapshotBackup construction', () => {
  it('refuses neither or both sources', () => {
    expect(() => new RdsSnapshotBackup(new RDSClient({}), {} as RdsSnapshotBackupOptions)).toThrow(
      BackupError,
    );
    expect(
      () =>
        new RdsSnapshotBackup(new RDSClient({}), {
          instanceId: 'a',
          clusterId: 'b',
        } as unknown as RdsSnapshotBackupOptions),
    ).toThrow(/exactly one/);
  });
});

describe('RdsSnapshotBackup.start', () => {
  it('creates a DB snapshot of the instance and returns its ARN', async () => {
    rds.on(CreateDBSnapshotCommand).resolves({ DBSnapshot: dbSnapshot({ Status: 'creating' }) });
    const { port } = backup({ instanceId: 'iot-v1' });

    const ref = await port.start('v1_before_migration');

    expect(ref).toEqual(instanceRef);
    const input = rds.commandCalls(CreateDBSnapshotCommand)[0].args[0].input;
    expect(input).toMatchObject({ DBInstanceIdentifier: 'iot-v1', DBSnapshotIdentifier: SNAP_ID });
    expect(input.Tags).toContainEqual({ Key: 'created-by', Value: 'iot-v2-migration' });
    expect(rds.commandCalls(CreateDBClusterSnapshotCommand)).toHaveLength(0);
  });

  it('creates a cluster snapshot of the Aurora cluster', async () => {
    rds
      .on(CreateDBClusterSnapshotCommand)
      .resolves({ DBClusterSnapshot: clusterSnapshot({ Status: 'creating' }) });
    const { port } = backup({ clusterId: 'iot-v1-cluster' });

    const ref = await port.start('v1_before_migration');

    expect(ref).toEqual(clusterRef);
    expect(rds.commandCalls(CreateDBClusterSnapshotCommand)[0].args[0].input).toMatchObject({
      DBClusterIdentifier: 'iot-v1-cluster',
      DBClusterSnapshotIdentifier: SNAP_ID,
    });
  });

  it('describes the snapshot when the create response carries no ARN', async () => {
    rds.on(CreateDBSnapshotCommand).resolves({});
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [dbSnapshot({ Status: 'creating' })] });
    const { port } = backup({ instanceId: 'iot-v1' });

    expect((await port.start('v1_before_migration')).location).toBe(INSTANCE_ARN);
  });

  it('wraps a refused create in BackupError naming the snapshot and the AWS error', async () => {
    rds
      .on(CreateDBSnapshotCommand)
      .rejects(new DBSnapshotAlreadyExistsFault({ message: 'exists', $metadata: {} }));
    const { port } = backup({ instanceId: 'iot-v1' });

    const error = await rejection(port.start('v1_before_migration'));

    expect(error.message).toContain(SNAP_ID);
    expect(error.message).toContain('DBSnapshotAlreadyExistsFault');
    expect(error.details).toMatchObject({ awsError: 'DBSnapshotAlreadyExistsFault', source: 'iot-v1' });
    expect(error.cause).toBeInstanceOf(DBSnapshotAlreadyExistsFault);
  });
});

describe('RdsSnapshotBackup.status', () => {
  it.each([
    ['creating', 'creating'],
    ['backing-up', 'creating'],
    ['pending', 'creating'],
    ['some-future-state', 'creating'],
    ['available', 'available'],
    ['failed', 'failed'],
    ['deleted', 'failed'],
    ['deleting', 'failed'],
    ['incompatible-restore', 'failed'],
  ])('instance snapshot status %s is %s', async (rdsStatus, expected) => {
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [dbSnapshot({ Status: rdsStatus })] });
    const { port } = backup({ instanceId: 'iot-v1' });

    expect(await port.status(instanceRef)).toBe(expected);
    expect(rds.commandCalls(DescribeDBSnapshotsCommand)[0].args[0].input).toEqual({
      DBSnapshotIdentifier: SNAP_ID,
    });
  });

  it.each([
    ['creating', 'creating'],
    ['available', 'available'],
    ['failed', 'failed'],
  ])('cluster snapshot status %s is %s', async (rdsStatus, expected) => {
    rds
      .on(DescribeDBClusterSnapshotsCommand)
      .resolves({ DBClusterSnapshots: [clusterSnapshot({ Status: rdsStatus })] });
    const { port } = backup({ clusterId: 'iot-v1-cluster' });

    expect(await port.status(clusterRef)).toBe(expected);
  });

  it('is failed when the snapshot is not found (fault or empty answer)', async () => {
    rds
      .on(DescribeDBSnapshotsCommand)
      .rejects(new DBSnapshotNotFoundFault({ message: 'nope', $metadata: {} }));
    rds
      .on(DescribeDBClusterSnapshotsCommand)
      .rejects(new DBClusterSnapshotNotFoundFault({ message: 'nope', $metadata: {} }));
    expect(await backup({ instanceId: 'iot-v1' }).port.status(instanceRef)).toBe('failed');
    expect(await backup({ clusterId: 'iot-v1-cluster' }).port.status(clusterRef)).toBe('failed');

    rds.reset();
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [] });
    expect(await backup({ instanceId: 'iot-v1' }).port.status(instanceRef)).toBe('failed');
  });

  it('retries throttling with growing backoff, then answers', async () => {
    rds
      .on(DescribeDBSnapshotsCommand)
      .rejectsOnce(throttled())
      .rejectsOnce(throttled())
      .resolves({ DBSnapshots: [dbSnapshot()] });
    const { port, sleeps } = backup({ instanceId: 'iot-v1' });

    expect(await port.status(instanceRef)).toBe('available');
    expect(sleeps).toEqual([10, 20]);
    expect(rds.commandCalls(DescribeDBSnapshotsCommand)).toHaveLength(3);
  });

  it('gives up after maxAttempts throttled calls with a BackupError', async () => {
    rds.on(DescribeDBSnapshotsCommand).rejects(throttled());
    const { port, sleeps } = backup({ instanceId: 'iot-v1' }, { maxAttempts: 3 });

    const error = await rejection(port.status(instanceRef));

    expect(error.message).toMatch(/after 3 attempts.*Throttling/);
    expect(sleeps).toHaveLength(2);
  });

  it('does not retry other errors', async () => {
    rds.on(DescribeDBSnapshotsCommand).rejects(
      new RDSServiceException({
        name: 'AccessDenied',
        $fault: 'client',
        message: 'not authorized',
        $metadata: { httpStatusCode: 403 },
      }),
    );
    const { port, sleeps } = backup({ instanceId: 'iot-v1' });

    const error = await rejection(port.status(instanceRef));

    expect(error.details).toMatchObject({ awsError: 'AccessDenied', attempts: 1 });
    expect(sleeps).toHaveLength(0);
  });

  it('refuses a ref of the other kind', async () => {
    const { port } = backup({ instanceId: 'iot-v1' });
    await rejection(port.status(clusterRef));
  });
});

describe('RdsSnapshotBackup.verify', () => {
  it('accepts an available, complete, encrypted instance snapshot and reports evidence', async () => {
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [dbSnapshot()] });
    rds.on(DescribeDBInstancesCommand).resolves({ DBInstances: [{ StorageEncrypted: true }] });
    const { port } = backup({ instanceId: 'iot-v1' });

    const { evidence } = await port.verify(instanceRef, COUNTS);

    expect(evidence).toMatchObject({
      snapshotArn: INSTANCE_ARN,
      source: 'iot-v1',
      createTime: '2024-03-05T06:10:00.000Z',
      engine: 'postgres',
      engineVersion: '16.3',
      allocatedStorageGiB: 20,
      encrypted: true,
      rowCountsAtStart: COUNTS,
    });
    expect(rds.commandCalls(DescribeDBInstancesCommand)[0].args[0].input).toEqual({
      DBInstanceIdentifier: 'iot-v1',
    });
  });

  it('accepts an Aurora cluster snapshot, asking the cluster whether it is encrypted', async () => {
    rds.on(DescribeDBClusterSnapshotsCommand).resolves({ DBClusterSnapshots: [clusterSnapshot()] });
    rds.on(DescribeDBClustersCommand).resolves({ DBClusters: [{ StorageEncrypted: true }] });
    const { port } = backup({ clusterId: 'iot-v1-cluster' });

    const { evidence } = await port.verify(clusterRef, COUNTS);

    expect(evidence).toMatchObject({
      snapshotArn: CLUSTER_ARN,
      engine: 'aurora-postgresql',
      encrypted: true,
    });
  });

  it('uses sourceEncrypted when given instead of describing the source', async () => {
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [dbSnapshot({ Encrypted: false })] });
    const { port } = backup({ instanceId: 'iot-v1' }, { sourceEncrypted: false });

    await port.verify(instanceRef, COUNTS);

    expect(rds.commandCalls(DescribeDBInstancesCommand)).toHaveLength(0);
  });

  it.each<[string, Partial<DBSnapshot>, RegExp]>([
    ['not available', { Status: 'creating', PercentProgress: 40 }, /status is creating.*40% complete/],
    [
      'of another instance',
      { DBInstanceIdentifier: 'someone-else' },
      /snapshot of someone-else, not of RDS instance iot-v1/,
    ],
    ['empty', { AllocatedStorage: 0 }, /allocated storage is 0/],
    ['without reported storage', { AllocatedStorage: undefined }, /allocated storage is not reported/],
    ['incomplete', { PercentProgress: 99 }, /99% complete/],
    [
      'unencrypted from an encrypted source',
      { Encrypted: false },
      /not encrypted although RDS instance iot-v1 is/,
    ],
  ])('rejects an instance snapshot that is %s', async (_what, overrides, message) => {
    rds.on(DescribeDBSnapshotsCommand).resolves({ DBSnapshots: [dbSnapshot(overrides)] });
    const { port } = backup({ instanceId: 'iot-v1' }, { sourceEncrypted: true });

    const error = await rejection(port.verify(instanceRef, COUNTS));

    expect(error.message).toMatch(message);
    expect(error.details).toMatchObject({ backup: SNAP_ID, snapshotArn: INSTANCE_ARN });
  });

  it('rejects a cluster snapshot of another cluster or unencrypted from an encrypted cluster', async () => {
    rds.on(DescribeDBClusterSnapshotsCommand).resolves({
      DBClusterSnapshots: [clusterSnapshot({ DBClusterIdentifier: 'other', StorageEncrypted: false })],
    });
    rds.on(DescribeDBClustersCommand).resolves({ DBClusters: [{ StorageEncrypted: true }] });
    const { port } = backup({ clusterId: 'iot-v1-cluster' });

    const error = await rejection(port.verify(clusterRef, COUNTS));

    expect(error.message).toMatch(/snapshot of other, not of Aurora cluster iot-v1-cluster/);
    expect(error.message).toMatch(/not encrypted although Aurora cluster iot-v1-cluster is/);
  });

  it('rejects a snapshot that does not exist', async () => {
    rds
      .on(DescribeDBSnapshotsCommand)
      .rejects(new DBSnapshotNotFoundFault({ message: 'nope', $metadata: {} }));
    const { port } = backup({ instanceId: 'iot-v1' }, { sourceEncrypted: true });

    const error = await rejection(port.verify(instanceRef, COUNTS));

    expect(error.message).toBe(`snapshot ${SNAP_ID} does not exist`);
  });
});
