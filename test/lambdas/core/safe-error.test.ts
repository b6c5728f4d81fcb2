import { Logger } from '@aws-lambda-powertools/logger';
import { UnmappableRowError, WindowCopyError } from '../../../lambdas/core/errors';
import {
  describeError,
  safeError,
  safeMessage,
  safeThrowable,
  WITHHELD,
} from '../../../lambdas/core/safe-error';
import { freshDatabases, type TestDatabases } from '../../support/pg';

const SECRET = 'sk_live_TOPSECRET_9f3Kq2Zx';

/** What Powertools Logger prints for `attributes` (its own formatting of errors included). */
function logged(attributes: Record<string, unknown>): string {
  const lines: string[] = [];
  const capture = (chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  };
  // Powertools prints errors with console.error, i.e. to stderr.
  const spies = [process.stdout, process.stderr].map((s) =>
    jest.spyOn(s, 'write').mockImplementation(capture),
  );
  try {
    new Logger({ serviceName: 'safe-error-test' }).error('failed', attributes);
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  expect(lines.join('')).toContain('"message":"failed"');
  return lines.join('');
}

describe('errors as they may leave the process: name, message and SQLSTATE, never a row', () => {
  let dbs: TestDatabases;
  /** Real PostgreSQL errors whose detail, where or message carries the secret. */
  const errors: Record<string, Error> = {};
  beforeAll(async () => {
    dbs = await freshDatabases('safeerr');
    await dbs.v2.query(
      `CREATE TABLE accounts (id int PRIMARY KEY, email text UNIQUE, api_key text CHECK (api_key NOT LIKE 'sk_live_%'), n int)`,
    );
    await dbs.v2.query(`INSERT INTO accounts VALUES (1, $1, 'ok', 1)`, [`${SECRET}@example.com`]);
    const fail = async (name: string, sql: string, params: unknown[]) => {
      errors[name] = await dbs.v2.query(sql, params).then(
        () => new Error(`${name} did not fail`),
        (e: Error) => e,
      );
    };
    await fail('check', `INSERT INTO accounts VALUES (2, 'b@example.com', $1, 2)`, [SECRET]);
    await fail('unique', `INSERT INTO accounts VALUES (3, $1, 'ok', 3)`, [`${SECRET}@example.com`]);
    await fail('invalid input', `SELECT $1::int`, [SECRET]);
    await fail('copy', `SELECT ('{"k": ' || $1 || '}')::jsonb`, [SECRET]);
  });
  afterAll(() => dbs.drop());

  it('provokes real PostgreSQL errors that carry the secret (so the checks below can fail)', () => {
    expect(errors.check).toMatchObject({ code: '23514', detail: expect.stringContaining(SECRET) });
    expect(errors.unique).toMatchObject({ code: '23505', detail: expect.stringContaining(SECRET) });
    expect(errors['invalid input']).toMatchObject({
      code: '22P02',
      message: expect.stringContaining(SECRET),
    });
    expect(JSON.stringify(errors.copy) + errors.copy.message).toContain(SECRET);
    // Powertools Logger prints an error's every property and its cause chain.
    expect(logged({ error: errors.check })).toContain(SECRET);
  });

  it.each(['check', 'unique', 'invalid input', 'copy'])(
    'a %s error keeps its name, message and SQLSTATE only',
    (kind) => {
      const error = errors[kind];
      const wrapped = new WindowCopyError('alerts', 7, safeMessage(error), { cause: error });
      for (const e of [error, wrapped]) {
        const safe = safeError(e);
        expect(Object.keys(safe).sort()).toEqual(
          e === wrapped ? ['code', 'message', 'name', 'retryable'] : ['code', 'message', 'name'],
        );
        expect(safe.code).toBe((error as { code?: string }).code);
        expect(JSON.stringify(safe)).not.toContain(SECRET);
        expect(logged({ error: safe })).not.toContain(SECRET);
        const thrown = safeThrowable(e);
        expect(thrown.name).toBe(e.name);
        // What the Lambda runtime reports (and Step Functions shows as the cause).
        const report = JSON.stringify({
          errorType: thrown.name,
          errorMessage: thrown.message,
          trace: thrown.stack?.split('\n'),
          ...thrown,
        });
        expect(report).not.toContain(SECRET);
        expect(describeError(e)).not.toContain(SECRET);
      }
    },
  );

  it('withholds the quoted value of a data exception, also folded into a named error, keeping the rest', () => {
    const error = errors['invalid input'];
    expect(safeMessage(error)).toBe(`invalid input syntax for type integer: ${WITHHELD}`);
    // Built before the fix: a named error that quotes the pg message, with the pg error as cause.
    const folded = new UnmappableRowError('alerts', 3, 'alerts.id=a1', error.message, { cause: error });
    expect(safeMessage(folded)).toBe(
      `V1 row alerts.id=a1 of alerts (window 3) cannot be mapped to V2: invalid input syntax for type integer: ${WITHHELD}`,
    );
    // Constraint messages name the constraint, never the value, and are kept whole.
    expect(safeMessage(errors.check)).toBe(
      'new row for relation "accounts" violates check constraint "accounts_api_key_check"',
    );
  });

  it('takes errors that are not errors', () => {
    expect(safeError('plain text')).toEqual({ name: 'Error', message: 'plain text' });
    expect(safeError(undefined)).toEqual({ name: 'Error', message: 'undefined' });
  });
});
