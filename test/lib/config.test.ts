import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONFIG_CONTEXT_KEY,
  CONFIG_FILE_CONTEXT_KEY,
  DEFAULT_CUTOVER_SCHEDULE,
  DEMO_V2_SCHEMA,
  loadStackConfig,
  parseStackConfig,
} from '../../lib/config';
import { ConfigError } from '../../lambdas/core/errors';
import { existingConfigInput } from './helpers';

const context = (values: Record<string, unknown>) => ({ tryGetContext: (key: string) => values[key] });

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('stack configuration', () => {
  it('uses the demo configuration when no context is given', () => {
    const config = loadStackConfig(context({}));

    expect(config.demo).toBe(true);
    expect(config.ssmPrefix).toBe('/iot-migration');
    expect(config.cutoverSchedule).toEqual(DEFAULT_CUTOVER_SCHEDULE);
    expect(config.worker).toMatchObject({ concurrency: 2, maxReceiveCount: 5 });
    expect(config.schemas.v2).toBe(DEMO_V2_SCHEMA);
  });

  it('reads the `migration` context, as an object or a JSON string', () => {
    const input = existingConfigInput({ ssmPrefix: '/prod/iot' });

    expect(loadStackConfig(context({ [CONFIG_CONTEXT_KEY]: input })).ssmPrefix).toBe('/prod/iot');
    expect(loadStackConfig(context({ [CONFIG_CONTEXT_KEY]: JSON.stringify(input) })).demo).toBe(false);
  });

  it('reads a file named by `configFile`', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stack-config-'));
    writeFileSync(
      join(dir, 'prod.json'),
      JSON.stringify(existingConfigInput({ worker: { concurrency: 4 } })),
    );

    try {
      const config = loadStackConfig(context({ [CONFIG_FILE_CONTEXT_KEY]: 'prod.json' }), dir);

      expect(config.worker.concurrency).toBe(4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the missing fields of a non-demo configuration', () => {
    const error = configError(() => parseStackConfig({ v1: existingConfigInput().v1 }));

    expect(error.issues.map((i) => i.field).sort()).toEqual([
      'securityGroupId',
      'snapshot',
      'subnetIds',
      'v2',
      'vpcId',
    ]);
    expect(error.message).toMatch(/vpcId: is required unless demo: true/);
  });

  it('names a bad secret ARN and a bad security group id', () => {
    const input = existingConfigInput({ securityGroupId: 'default' });
    const error = configError(() =>
      parseStackConfig({ ...input, v1: { ...input.v1, secretArn: 'my-secret' } }),
    );

    expect(error.issues.map((i) => i.field).sort()).toEqual(['securityGroupId', 'v1.secretArn']);
  });

  it.each([
    [
      'decreasing',
      [
        { percentage: 50, bakeMinutes: 30 },
        { percentage: 25, bakeMinutes: 30 },
        { percentage: 100, bakeMinutes: 30 },
      ],
      'cutoverSchedule.1.percentage',
    ],
    [
      'not ending at 100',
      [
        { percentage: 10, bakeMinutes: 30 },
        { percentage: 50, bakeMinutes: 30 },
      ],
      'cutoverSchedule.1.percentage',
    ],
    ['above 100', [{ percentage: 150, bakeMinutes: 30 }], 'cutoverSchedule.0.percentage'],
    [
      'zero',
      [
        { percentage: 0, bakeMinutes: 30 },
        { percentage: 100, bakeMinutes: 30 },
      ],
      'cutoverSchedule.0.percentage',
    ],
    ['negative bake time', [{ percentage: 100, bakeMinutes: -1 }], 'cutoverSchedule.0.bakeMinutes'],
  ])('refuses a cutover schedule %s, naming the step', (_name, cutoverSchedule, field) => {
    const error = configError(() => parseStackConfig({ demo: true, cutoverSchedule }));

    expect(error.issues.map((i) => i.field)).toContain(field);
  });

  it('refuses a worker concurrency below the event source minimum of 2', () => {
    const error = configError(() => parseStackConfig({ demo: true, worker: { concurrency: 1 } }));

    expect(error.issues).toEqual([
      { field: 'worker.concurrency', problem: expect.stringMatching(/at least 2/) },
    ]);
  });

  it.each([
    ['missing', undefined],
    ['empty', {}],
  ])(
    'refuses a non-demo configuration whose snapshot is %s: Phase 1 could not back V1 up',
    (_name, snapshot) => {
      const error = configError(() => parseStackConfig({ ...existingConfigInput(), snapshot }));

      expect(error.issues).toEqual([
        { field: 'snapshot', problem: expect.stringMatching(/rdsInstanceId or auroraClusterId.*Phase 1/) },
      ]);
    },
  );

  it.each([
    ['a wildcard', { rdsInstanceId: '*' }, 'snapshot.rdsInstanceId'],
    ['a prefix wildcard', { auroraClusterId: 'iot-*' }, 'snapshot.auroraClusterId'],
    ['a path', { rdsInstanceId: 'iot/v1' }, 'snapshot.rdsInstanceId'],
    ['a leading digit', { rdsInstanceId: '1iot' }, 'snapshot.rdsInstanceId'],
    ['a double hyphen', { auroraClusterId: 'iot--v1' }, 'snapshot.auroraClusterId'],
    ['64 characters', { rdsInstanceId: `a${'b'.repeat(63)}` }, 'snapshot.rdsInstanceId'],
  ])('refuses a snapshot id with %s: it goes into IAM resource ARNs', (_name, snapshot, field) => {
    const error = configError(() => parseStackConfig({ ...existingConfigInput(), snapshot }));

    expect(error.issues).toEqual([
      { field, problem: expect.stringMatching(/RDS identifier.*IAM resource ARNs/) },
    ]);
  });

  it('takes an optional V1 owner secret, as a secret ARN, for V1 only', () => {
    const input = existingConfigInput();
    const owner = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:iot/v1-owner-MnOpQr';
    expect(
      parseStackConfig({ ...input, v1: { ...input.v1!, ownerSecretArn: owner } }).v1?.ownerSecretArn,
    ).toBe(owner);
    expect(
      configError(() =>
        parseStackConfig({ ...input, v1: { ...input.v1!, ownerSecretArn: 'postgres://owner:pw@v1/iot' } }),
      ).issues,
    ).toEqual([{ field: 'v1.ownerSecretArn', problem: expect.stringMatching(/Secrets Manager secret ARN/) }]);
    expect(
      configError(() => parseStackConfig({ ...input, v2: { ...input.v2!, ownerSecretArn: owner } as never }))
        .issues,
    ).toEqual([expect.objectContaining({ field: expect.stringMatching(/^v2/) })]);
  });

  it('refuses V1 and V2 in one schema of one database (their tables share names)', () => {
    const input = existingConfigInput();
    const error = configError(() => parseStackConfig({ ...input, v2: { ...input.v1 } }));

    expect(error.issues).toEqual([{ field: 'schemas.v2', problem: expect.stringMatching(/must differ/) }]);
    expect(() =>
      parseStackConfig({ ...input, v2: { ...input.v1 }, schemas: { v2: 'iot_v2' } }),
    ).not.toThrow();
  });

  it('refuses network and database fields together with demo: true', () => {
    const error = configError(() => parseStackConfig({ ...existingConfigInput(), demo: true }));

    expect(error.issues.map((i) => i.field)).toEqual(expect.arrayContaining(['vpcId', 'v1', 'v2']));
  });

  it('refuses unknown fields, naming them', () => {
    const error = configError(() => parseStackConfig({ demo: true, sssmPrefix: '/x' }));

    expect(error.message).toMatch(/sssmPrefix/);
  });

  it('refuses both `migration` and `configFile`', () => {
    const error = configError(() =>
      loadStackConfig(context({ [CONFIG_CONTEXT_KEY]: {}, [CONFIG_FILE_CONTEXT_KEY]: 'x.json' })),
    );

    expect(error.issues[0].field).toBe(CONFIG_FILE_CONTEXT_KEY);
  });
});
