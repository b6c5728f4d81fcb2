import type { Pool } from 'pg';
import type { MigrationConfig } from '../../lambdas/core/config';
import { rowDigest } from '../../lambdas/core/digest';
import { MAPPINGS, type MappedTable } from '../../lambdas/core/mapping';

/**
 * Every row's digest on one side, as the verifier computes it in SQL (rowDigest), keyed by its
 * V1 id (V2 telemetry: its legacy_id), in the migrated tenant's scope.
 */
export async function digests(
  pool: Pool,
  config: MigrationConfig,
  table: MappedTable,
  side: 'v1' | 'v2',
): Promise<Map<string, string>> {
  const m = MAPPINGS[table];
  const key = side === 'v2' && table === 'telemetry' ? 'legacy_id' : 'id';
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const { rows } = await client.query<{ k: string; d: string }>(
      `SELECT ${key}::text AS k, (${rowDigest(table, side, config)})::text AS d
         FROM public.${side === 'v1' ? m.v1Table : m.v2Table}`,
    );
    await client.query('COMMIT');
    return new Map(rows.map((r) => [r.k, r.d]));
  } finally {
    client.release();
  }
}

/** The first five keys whose values differ between `a` and `b` (by `same`), or that only `b` has, as readable lines. */
export function differences<T>(
  a: Map<string, T>,
  b: Map<string, T>,
  same = (x: T, y: T | undefined) => x === y,
): string[] {
  const out: string[] = [];
  for (const [k, v] of a)
    if (!same(v, b.get(k)))
      out.push(`${JSON.stringify(k)}: ${JSON.stringify(v)} ≠ ${JSON.stringify(b.get(k))}`);
  for (const k of b.keys()) if (!a.has(k)) out.push(`${JSON.stringify(k)}: only in the second`);
  return out.slice(0, 5);
}
