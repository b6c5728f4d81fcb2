import fc from 'fast-check';
import type { Pool } from 'pg';

/**
 * fast-check arbitraries of V1 rows across every column's domain, as PostgreSQL text (so values
 * that JavaScript cannot hold, such as JSON numbers beyond 2^53 or timestamps beyond year
 * 275760, are written exactly): JSON `null` and SQL NULL, nested nulls, empty objects and
 * arrays, huge and tiny numbers, -0, unicode and escapes, empty strings, the ends of time and
 * ±infinity, every enum value.
 */

/** Text PostgreSQL accepts (no NUL), unicode and escapes included, sometimes empty. */
export const pgText = (maxLength = 12) =>
  fc
    .oneof(
      { weight: 1, arbitrary: fc.constant('') },
      {
        weight: 1,
        arbitrary: fc.constantFrom(' ', '\t', '\n', '"', "'", '\\', '\\N', 'NULL', 'null', '🙂', '漢字', 'é'),
      },
      { weight: 6, arbitrary: fc.string({ unit: 'grapheme', maxLength }) },
      { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength }) },
    )
    .map((s) => s.split(String.fromCharCode(0)).join(''));

const digits = (min: number, max: number) =>
  fc.array(fc.constantFrom(...'0123456789'), { minLength: min, maxLength: max }).map((d) => d.join(''));

/** A JSON number as text: small and huge integers, long fractions, exponents, -0. */
export const jsonNumber = fc.oneof(
  fc.integer().map(String),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(String),
  fc.constantFrom(
    '-0',
    '0.0',
    '-0.0',
    '1e300',
    '-1e300',
    '1E-300',
    '1e+5',
    '9007199254740993',
    '0.1',
    '1.50',
    '123456789012345678901234567890.000000000000000000001',
  ),
  fc
    .tuple(fc.boolean(), digits(1, 20), digits(1, 25), fc.option(fc.integer({ min: -320, max: 320 })))
    .map(
      ([neg, i, f, e]) => `${neg ? '-' : ''}${i.replace(/^0+(?=\d)/, '')}.${f}${e === null ? '' : `e${e}`}`,
    ),
);

const jsonString = pgText(8).map((s) => JSON.stringify(s));
const jsonKey = fc.oneof(pgText(6), fc.constantFrom('a', 'b', 'z', '', 'null')).map((s) => JSON.stringify(s));

/** A JSON document as text, of any shape (scalars at the top level too, and `null`). */
export const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom('null', 'true', 'false', '{}', '[]', '[null]', '{"a": null}', '{"a": {"b": null}}'),
    jsonNumber,
    jsonString,
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(', ')}]`),
    fc
      .array(fc.tuple(jsonKey, tie('value')), { maxLength: 4 })
      .map((entries) => `{${entries.map(([k, v]) => `${k}:${v}`).join(' , ')}}`),
  ),
})).value;

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/**
 * Instants a TimescaleDB hypertable cannot partition by (±infinity, and the edges of
 * PostgreSQL's range, beyond TimescaleDB's): the backfill names such a V1 row
 * (UnmappableRowError) instead of copying it, so batches for a hypertable leave them out.
 */
const OUTSIDE_HYPERTABLE_RANGE = new Set([
  'infinity',
  '-infinity',
  '4713-11-24 00:00:00 BC',
  '275760-09-13 00:00:00.001',
  '294276-12-31 23:59:59.999',
]);

/**
 * A `timestamp(3)` as PostgreSQL input text: ordinary instants, millisecond edges, leap days,
 * dates before the common era, the far future beyond JavaScript's Date, and ±infinity
 * (`hypertable`: only the instants a TimescaleDB hypertable's time column takes).
 */
export const timestampText = (near = false, hypertable = false) =>
  fc.oneof(
    {
      weight: 8,
      arbitrary: fc
        .record({
          y: near ? fc.integer({ min: 2023, max: 2026 }) : fc.integer({ min: 1, max: 9999 }),
          mo: fc.integer({ min: 1, max: 12 }),
          d: fc.integer({ min: 1, max: 28 }),
          h: fc.integer({ min: 0, max: 23 }),
          mi: fc.integer({ min: 0, max: 59 }),
          s: fc.integer({ min: 0, max: 59 }),
          ms: fc.integer({ min: 0, max: 999 }),
        })
        .map(
          (t) =>
            `${pad(t.y, 4)}-${pad(t.mo, 2)}-${pad(t.d, 2)} ${pad(t.h, 2)}:${pad(t.mi, 2)}:${pad(t.s, 2)}.${pad(t.ms, 3)}`,
        ),
    },
    {
      weight: 2,
      arbitrary: fc
        .constantFrom(
          'infinity',
          '-infinity',
          '1970-01-01 00:00:00',
          '1969-12-31 23:59:59.999',
          '2000-02-29 12:00:00',
          '0044-03-15 10:00:00.123 BC',
          '4713-11-24 00:00:00 BC',
          '275760-09-13 00:00:00.001',
          '294276-12-31 23:59:59.999',
          '2099-12-31 23:59:59.999',
        )
        .filter((t) => !hypertable || !OUTSIDE_HYPERTABLE_RANGE.has(t)),
    },
  );

export const ROLES = ['ADMIN', 'OPERATOR', 'VIEWER'] as const;

/**
 * A property test's seed and rows a table: from the environment (`<name>_SEED`, `<name>_ROWS`)
 * to replay a run, else a fresh seed (to put in the test's title) and `rows`.
 */
export function propertyRun(name: string, rows: number): { seed: number; rows: number } {
  return {
    seed: Number(process.env[`${name}_SEED`] ?? Date.now() % 2 ** 31),
    rows: Number(process.env[`${name}_ROWS`] ?? rows),
  };
}

export interface V1Batch {
  users: Record<string, string | null>[];
  devices: Record<string, string | null>[];
  device_data: Record<string, string | null>[];
  alerts: Record<string, string | null>[];
}

const uniqueText = (prefix: string) => (i: number, s: string) => `${prefix}${i}${s}`;

/**
 * A batch of V1 rows that satisfies V1's constraints (unique ids and emails, foreign keys),
 * `n` rows per table, drawn from the arbitraries above with the given seed. With
 * `telemetry: 'hypertable'`, telemetry instants stay inside a TimescaleDB hypertable's range.
 */
export function v1Batch(seed: number, n: number, options: { telemetry?: 'hypertable' } = {}): V1Batch {
  const sample = <T>(arb: fc.Arbitrary<T>, offset: number) =>
    fc.sample(arb, { seed: seed + offset, numRuns: n });
  const id = uniqueText('');
  const users = sample(
    fc.record({
      s: pgText(6),
      email: pgText(10),
      name: fc.option(pgText(), { nil: null }),
      passwordHash: pgText(),
      role: fc.constantFrom(...ROLES),
      createdAt: timestampText(),
      updatedAt: timestampText(),
    }),
    1,
  ).map((u, i) => ({
    id: id(i, u.s),
    email: `${u.email}#${i}`,
    name: u.name,
    passwordHash: u.passwordHash,
    role: u.role,
    createdAt: u.createdAt,
    updatedAt: u.updatedAt,
  }));
  const devices = sample(
    fc.record({
      s: pgText(6),
      name: pgText(),
      type: fc.oneof(fc.constantFrom('sensor', 'gateway', ''), pgText(5)),
      status: pgText(6),
      config: fc.option(jsonText, { nil: null, freq: 4 }),
      owner: fc.option(fc.nat(), { nil: null }),
      lastSeenAt: fc.option(timestampText(), { nil: null }),
      createdAt: timestampText(),
      updatedAt: timestampText(),
    }),
    2,
  ).map((d, i) => ({
    id: id(i, d.s),
    name: d.name,
    type: d.type,
    status: d.status,
    config: d.config,
    ownerId: d.owner === null ? null : users[d.owner % users.length].id,
    lastSeenAt: d.lastSeenAt,
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
  }));
  const device_data = sample(
    fc.record({
      id: fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }),
      device: fc.nat(),
      timestamp: timestampText(true, options.telemetry === 'hypertable'),
      data: jsonText,
      protocol: pgText(6),
      source: fc.option(pgText(6), { nil: null }),
    }),
    3,
  );
  const seen = new Set<bigint>();
  const telemetry = device_data
    .filter((t) => !seen.has(t.id) && seen.add(t.id))
    .map((t) => ({
      id: String(t.id),
      deviceId: devices[t.device % devices.length].id,
      timestamp: t.timestamp,
      data: t.data,
      protocol: t.protocol,
      source: t.source,
    }));
  const alerts = sample(
    fc.record({
      s: pgText(6),
      device: fc.nat(),
      severity: pgText(6),
      message: pgText(20),
      status: pgText(6),
      createdAt: timestampText(),
      resolvedAt: fc.option(timestampText(), { nil: null }),
    }),
    4,
  ).map((a, i) => ({
    id: id(i, a.s),
    deviceId: devices[a.device % devices.length].id,
    severity: a.severity,
    message: a.message,
    status: a.status,
    createdAt: a.createdAt,
    resolvedAt: a.resolvedAt,
  }));
  return { users, devices, device_data: telemetry, alerts };
}

const V1_TYPES: Record<keyof V1Batch, Record<string, string>> = {
  users: {
    id: 'text',
    email: 'text',
    name: 'text',
    passwordHash: 'text',
    role: '"UserRole"',
    createdAt: 'timestamp(3)',
    updatedAt: 'timestamp(3)',
  },
  devices: {
    id: 'text',
    name: 'text',
    type: 'text',
    status: 'text',
    config: 'jsonb',
    ownerId: 'text',
    lastSeenAt: 'timestamp(3)',
    createdAt: 'timestamp(3)',
    updatedAt: 'timestamp(3)',
  },
  device_data: {
    id: 'bigint',
    deviceId: 'text',
    timestamp: 'timestamp(3)',
    data: 'jsonb',
    protocol: 'text',
    source: 'text',
  },
  alerts: {
    id: 'text',
    deviceId: 'text',
    severity: 'text',
    message: 'text',
    status: 'text',
    createdAt: 'timestamp(3)',
    resolvedAt: 'timestamp(3)',
  },
};

/** Inserts a batch into V1 (schema `public`), every value as text cast by PostgreSQL itself. */
export async function insertV1Batch(v1: Pool, batch: V1Batch): Promise<void> {
  for (const table of ['users', 'devices', 'device_data', 'alerts'] as const) {
    const columns = Object.keys(V1_TYPES[table]);
    const rows = batch[table];
    if (rows.length === 0) continue;
    await v1.query(
      `INSERT INTO ${table} (${columns.map((c) => `"${c}"`).join(', ')})
       SELECT ${columns.map((c, i) => `c${i}::${V1_TYPES[table][c]}`).join(', ')}
         FROM unnest(${columns.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${columns.map((_, i) => `c${i}`).join(', ')})`,
      columns.map((c) => rows.map((r) => r[c])),
    );
  }
}
