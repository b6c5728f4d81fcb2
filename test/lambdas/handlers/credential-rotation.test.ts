import { randomBytes } from 'node:crypto';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import type { Pool } from 'pg';
import { getRuntime } from '../../../lambdas/handlers/runtime';
import { LAMBDA_ENV } from '../../../lib/runtime-contract';
import { freshDatabases, testServer, type TestDatabases } from '../../support/pg';

/**
 * Secrets Manager rotates a database password while the workers run: a Lambda container's pool
 * opened with the old one must fetch the secret again (once) when PostgreSQL refuses it, and
 * carry on. Real PostgreSQL (scram-sha-256), the secret at the SDK boundary.
 */

const secrets = mockClient(SecretsManagerClient);
const ARN = (name: string) => `arn:aws:secretsmanager:eu-west-1:123456789012:secret:${name}-AbCdEf`;

describe('a rotated database secret does not stop the workers', () => {
  let dbs: TestDatabases;
  let pool: Pool;
  const role = `rotating_${randomBytes(3).toString('hex')}`;
  /** What the V1 secret holds now. */
  let secretPassword = 'first-Pa55word';
  const v1Fetches = () =>
    secrets.commandCalls(GetSecretValueCommand).filter((c) => c.args[0].input.SecretId === ARN('v1')).length;

  /** ALTER ROLE … PASSWORD, then ends the role's sessions and waits until the pool has none left. */
  async function rotate(password: string): Promise<void> {
    await dbs.v1.query(`ALTER ROLE ${role} PASSWORD '${password}'`);
    await dbs.v1.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role]);
    // The pool drops a client whose session ended (its 'error' event): wait for that, not a timer.
    while (pool.totalCount > 0) await new Promise((r) => setImmediate(r));
  }

  beforeAll(async () => {
    dbs = await freshDatabases('rotate');
    await dbs.v1.query(`CREATE ROLE ${role} LOGIN PASSWORD '${secretPassword}'`);
    const { port, user, password } = testServer();
    secrets.on(GetSecretValueCommand).callsFake((input: { SecretId: string }) => ({
      SecretString: JSON.stringify(
        input.SecretId === ARN('v1')
          ? { username: role, password: secretPassword, host: '127.0.0.1', port, dbname: dbs.v1Name }
          : input.SecretId === ARN('v1-owner')
            ? { username: user, password, host: '127.0.0.1', port, dbname: dbs.v1Name }
            : { username: user, password, host: '127.0.0.1', port, dbname: dbs.v2Name },
      ),
    }));
    const env = {
      [LAMBDA_ENV.v1Host]: '127.0.0.1',
      [LAMBDA_ENV.v1Database]: dbs.v1Name,
      [LAMBDA_ENV.v1SecretArn]: ARN('v1'),
      [LAMBDA_ENV.v1OwnerSecretArn]: ARN('v1-owner'),
      [LAMBDA_ENV.v2Host]: '127.0.0.1',
      [LAMBDA_ENV.v2Database]: dbs.v2Name,
      [LAMBDA_ENV.v2SecretArn]: ARN('v2'),
      [LAMBDA_ENV.dbSsl]: 'false',
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    };
    Object.assign(process.env, env);
    pool = (await getRuntime({ env: { ...process.env, ...env }, poolMax: 2 })).v1;
  });
  afterAll(async () => {
    const runtime = await getRuntime();
    await Promise.all([runtime.v1.end(), runtime.v2.end(), runtime.v1Owner?.end()]);
    delete process.env[LAMBDA_ENV.v1OwnerSecretArn];
    await dbs.drop();
    secrets.restore();
  });

  it('opens V1 a second time as the owner secret’s role, for the rename alone (V1_DB_OWNER_SECRET_ARN)', async () => {
    const runtime = await getRuntime();
    expect((await runtime.v1Owner!.query('SELECT current_user AS u, current_database() AS d')).rows).toEqual([
      { u: testServer().user, d: dbs.v1Name },
    ]);
    expect((await runtime.v1.query('SELECT current_user AS u')).rows).toEqual([{ u: role }]);
  });

  it('connects with the secret fetched at cold start', async () => {
    expect((await pool.query('SELECT current_user AS u')).rows).toEqual([{ u: role }]);
    expect(v1Fetches()).toBe(1);
  });

  it('fetches the secret again once when the password is refused, and carries on', async () => {
    secretPassword = 'second-Pa55word';
    await rotate(secretPassword);
    expect((await pool.query('SELECT current_user AS u')).rows).toEqual([{ u: role }]);
    expect(v1Fetches()).toBe(2);
    // Connections opened from now on use the new password without asking again.
    const clients = await Promise.all([pool.connect(), pool.connect()]);
    for (const c of clients) c.release();
    expect(v1Fetches()).toBe(2);
  });

  it('asks only once more when the secret still holds a refused password, then names the failure', async () => {
    await rotate('third-Pa55word-not-in-the-secret-yet');
    const error = await pool.query('SELECT 1').catch((e: unknown) => e);
    expect(error).toMatchObject({
      name: 'DatabaseConnectionError',
      message: expect.stringMatching(
        /V1 database .*password authentication failed, also with the credentials fetched again/,
      ),
    });
    expect(v1Fetches()).toBe(3);
    expect(JSON.stringify(error)).not.toContain('Pa55word');
  });
});
