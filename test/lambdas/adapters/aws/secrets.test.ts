import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import {
  clearDatabaseCredentialsCache,
  fetchDatabaseCredentials,
} from '../../../../lambdas/adapters/aws/secrets';
import { DatabaseSecretError } from '../../../../lambdas/core/errors';

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:iot/v2-AbCdEf';
const PASSWORD = 'pa55-w0rd-that-must-never-leak';
const secretsManager = mockClient(SecretsManagerClient);
const client = () => new SecretsManagerClient({ region: 'eu-west-1' });

const rdsSecret = (fields: Record<string, unknown> = {}) =>
  JSON.stringify({
    engine: 'postgres',
    username: 'migration',
    password: PASSWORD,
    host: 'db.example.internal',
    port: 5432,
    dbname: 'iot',
    ...fields,
  });

async function rejection(promise: Promise<unknown>): Promise<DatabaseSecretError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DatabaseSecretError);
  return error as DatabaseSecretError;
}

beforeEach(() => {
  secretsManager.reset();
  clearDatabaseCredentialsCache();
});
afterAll(() => secretsManager.restore());

describe('fetchDatabaseCredentials', () => {
  it('parses an RDS secret into credentials', async () => {
    secretsManager.on(GetSecretValueCommand, { SecretId: ARN }).resolves({ SecretString: rdsSecret() });

    await expect(fetchDatabaseCredentials(ARN, client())).resolves.toEqual({
      user: 'migration',
      password: PASSWORD,
      host: 'db.example.internal',
      port: 5432,
      database: 'iot',
    });
  });

  it('accepts a secret with only username and password, and a port given as a string', async () => {
    secretsManager.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ username: 'u', password: PASSWORD, port: '6432' }),
    });

    await expect(fetchDatabaseCredentials(ARN, client())).resolves.toMatchObject({ user: 'u', port: 6432 });
  });

  it('names the bad fields of a malformed secret without quoting the password', async () => {
    secretsManager
      .on(GetSecretValueCommand)
      .resolves({ SecretString: rdsSecret({ username: 42, port: 'abc' }) });

    const error = await rejection(fetchDatabaseCredentials(ARN, client()));

    expect(error.name).toBe('DatabaseSecretError');
    expect(error.message).toContain(ARN);
    expect(error.message).toMatch(/username/);
    expect(error.message).toMatch(/port/);
    expect(JSON.stringify(error.toJSON())).not.toContain(PASSWORD);
    expect(error.message).not.toContain(PASSWORD);
  });

  it('says a non-JSON secret is not JSON, without quoting it', async () => {
    secretsManager.on(GetSecretValueCommand).resolves({ SecretString: `password=${PASSWORD}` });

    const error = await rejection(fetchDatabaseCredentials(ARN, client()));

    expect(error.problem).toMatch(/not JSON/);
    expect(JSON.stringify(error.toJSON())).not.toContain(PASSWORD);
    expect(error.cause).toBeUndefined();
  });

  it('fetches each secret once per container, sharing concurrent requests', async () => {
    secretsManager.on(GetSecretValueCommand).resolves({ SecretString: rdsSecret() });
    const sm = client();

    const [a, b] = await Promise.all([fetchDatabaseCredentials(ARN, sm), fetchDatabaseCredentials(ARN, sm)]);
    const c = await fetchDatabaseCredentials(ARN, sm);

    expect(a).toBe(b);
    expect(c).toBe(a);
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(1);
  });

  it('does not cache a failure: the next call asks again', async () => {
    secretsManager
      .on(GetSecretValueCommand)
      .rejectsOnce(Object.assign(new Error('throttled'), { name: 'ThrottlingException' }))
      .resolves({ SecretString: rdsSecret() });
    const sm = client();

    const error = await rejection(fetchDatabaseCredentials(ARN, sm));
    expect(error.retryable).toBe(true);
    await expect(fetchDatabaseCredentials(ARN, sm)).resolves.toMatchObject({ user: 'migration' });
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('marks access denied as not retryable', async () => {
    secretsManager
      .on(GetSecretValueCommand)
      .rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));

    const error = await rejection(fetchDatabaseCredentials(ARN, client()));

    expect(error.retryable).toBe(false);
    expect(error.problem).toMatch(/AccessDeniedException/);
  });
});
