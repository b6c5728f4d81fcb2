import { createReadStream, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Client, ClientBase } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { ident } from '../../core/db';
import { BackupError } from '../../core/errors';

/**
 * An online, consistent export of one schema that needs nothing installed: every table's rows
 * are copied out (COPY … TO STDOUT) inside one REPEATABLE READ transaction, so they are all of
 * one snapshot however much V1 is written meanwhile, with the DDL to recreate the schema's enum
 * types, sequences, tables, constraints and indexes read from the catalogs. Nothing here needs
 * V1 idle or locks more than a reader does (ACCESS SHARE).
 *
 * Layout of an export folder:
 *   manifest.json   what was exported, when, and each table's rows and checksum in the snapshot
 *   pre-data.sql    CREATE SCHEMA / TYPE / SEQUENCE / TABLE
 *   data/NNN.copy   one table's rows in COPY text format
 *   post-data.sql   constraints, indexes, sequence ownership and values
 */

/** The session settings under which row texts (and so checksums) are the same on any server. */
export const STABLE_TEXT_SETTINGS = [
  `SET LOCAL DateStyle = 'ISO, YMD'`,
  `SET LOCAL TimeZone = 'UTC'`,
  `SET LOCAL IntervalStyle = 'postgres'`,
  `SET LOCAL extra_float_digits = 3`,
  `SET LOCAL bytea_output = 'hex'`,
];

/** One table's rows and the order-independent checksum of their text, in one snapshot. */
export interface TableFingerprint {
  rows: number;
  checksum: string;
}

/** Every base table of `schema`, by name. */
export async function schemaTables(client: ClientBase, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
    [schema],
  );
  return rows.map((r) => r.name);
}

/**
 * Each table's row count and the sum of the hashes of its rows' text (order-independent), as
 * the client's transaction sees them. Run under STABLE_TEXT_SETTINGS on both sides of a
 * comparison.
 */
export async function fingerprintTables(
  client: ClientBase,
  schema: string,
  tables: string[],
): Promise<Record<string, TableFingerprint>> {
  const out: Record<string, TableFingerprint> = {};
  for (const table of tables) {
    const { rows } = await client.query<{ n: string; s: string }>(
      `SELECT count(*) AS n, coalesce(sum(pg_catalog.hashtextextended(t::text, 0)), 0)::text AS s
         FROM ONLY ${ident(schema)}.${ident(table)} AS t`,
    );
    out[table] = { rows: Number(rows[0].n), checksum: rows[0].s };
  }
  return out;
}

export interface ExportManifest {
  format: 'iot-v2-migration-export/1';
  schema: string;
  /** When the snapshot was taken (the server's clock). */
  snapshotAt: string;
  serverVersion: string;
  tables: { name: string; file: string; columns: string[] }[];
  fingerprints: Record<string, TableFingerprint>;
  /** Objects of the schema that are not data and are not recreated (views, triggers, functions). */
  notIncluded: string[];
  complete: true;
}

/** Column and type checks: every column's type must be built in or an enum of the schema. */
async function unsupportedColumns(client: ClientBase, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ what: string }>(
    `SELECT format('%s.%s (%s)', c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) AS what
       FROM pg_catalog.pg_attribute a
       JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
       JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
       JOIN pg_catalog.pg_namespace bn ON bn.oid = b.typnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
        AND NOT (bn.nspname = 'pg_catalog' AND b.typtype = 'b')
        AND NOT (bn.nspname = $1 AND b.typtype = 'e')
      ORDER BY 1`,
    [schema],
  );
  const partitioned = await client.query<{ what: string }>(
    `SELECT format('%s (partitioned or inherited table)', c.relname) AS what
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND (c.relkind = 'p' OR c.relispartition
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid))
      ORDER BY 1`,
    [schema],
  );
  return [...rows.map((r) => r.what), ...partitioned.rows.map((r) => r.what)];
}

/** The DDL recreating the schema, split around the data (as pg_dump's pre-data / post-data). */
async function schemaDdl(client: ClientBase, schema: string): Promise<{ pre: string[]; post: string[] }> {
  // pg_catalog only on the search path: every name the catalog functions print is qualified.
  await client.query(`SET LOCAL search_path = pg_catalog`);
  const pre: string[] = [`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`];
  const post: string[] = [];
  const enums = await client.query<{ ddl: string }>(
    `SELECT format('CREATE TYPE %I.%I AS ENUM (%s)', n.nspname, t.typname,
                   string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)) AS ddl
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
      WHERE n.nspname = $1 GROUP BY n.nspname, t.typname ORDER BY t.typname`,
    [schema],
  );
  pre.push(...enums.rows.map((r) => r.ddl));
  // Sequences that are not an identity column's own (those come with their column).
  const sequences = await client.query<{ name: string; ddl: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name,
            format('CREATE SEQUENCE %I.%I AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s%s',
                   n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
                   s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END) AS ddl
       FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')
      ORDER BY c.relname`,
    [schema],
  );
  pre.push(...sequences.rows.map((r) => r.ddl));
  const columns = await client.query<{ table_name: string; column_ddl: string }>(
    `SELECT c.relname AS table_name,
            format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
              || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                      THEN (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                              FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                             WHERE co.oid = a.attcollation) ELSE '' END
              || CASE WHEN a.attgenerated = 's' THEN format(' GENERATED ALWAYS AS (%s) STORED', pg_get_expr(d.adbin, d.adrelid))
                      WHEN d.adbin IS NOT NULL THEN format(' DEFAULT %s', pg_get_expr(d.adbin, d.adrelid))
                      ELSE '' END
              || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                                    WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
              || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END AS column_ddl
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY c.relname, a.attnum`,
    [schema],
  );
  const byTable = new Map<string, string[]>();
  for (const r of columns.rows)
    byTable.set(r.table_name, [...(byTable.get(r.table_name) ?? []), r.column_ddl]);
  for (const [table, cols] of byTable) {
    pre.push(`CREATE TABLE ${ident(schema)}.${ident(table)} (\n  ${cols.join(',\n  ')}\n)`);
  }
  // Keys and checks before foreign keys, which need the keys they reference.
  const constraints = await client.query<{ ddl: string }>(
    `SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, c.relname, con.conname,
                   pg_get_constraintdef(con.oid)) AS ddl
       FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'r' AND con.contype IN ('p', 'u', 'x', 'c', 'f') AND con.conislocal
      ORDER BY CASE con.contype WHEN 'f' THEN 2 ELSE 1 END, c.relname, con.conname`,
    [schema],
  );
  post.push(...constraints.rows.map((r) => r.ddl));
  const indexes = await client.query<{ ddl: string }>(
    `SELECT pg_get_indexdef(i.indexrelid) AS ddl
       FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_class ic ON ic.oid = i.indexrelid
      WHERE n.nspname = $1 AND c.relkind = 'r'
        AND NOT EXISTS (SELECT 1 FROM pg_constraint con
                         WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
      ORDER BY ic.relname`,
    [schema],
  );
  post.push(...indexes.rows.map((r) => r.ddl));
  const owned = await client.query<{ ddl: string }>(
    `SELECT format('ALTER SEQUENCE %I.%I OWNED BY %I.%I.%I', sn.nspname, s.relname, tn.nspname, t.relname, a.attname) AS ddl
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_class t ON t.oid = d.refobjid
       JOIN pg_namespace tn ON tn.oid = t.relnamespace
       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
        AND sn.nspname = $1
      ORDER BY 1`,
    [schema],
  );
  post.push(...owned.rows.map((r) => r.ddl));
  // Sequence positions (read now: sequences are not transactional, so these are at least the
  // snapshot's), for plain sequences and identity columns alike.
  const positions = await client.query<{ seq: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS seq
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY 1`,
    [schema],
  );
  for (const { seq } of positions.rows) {
    const { rows } = await client.query<{ ddl: string }>(
      `SELECT format('SELECT pg_catalog.setval(%L, %s, %s)', $1::text, last_value,
                     CASE WHEN is_called THEN 'true' ELSE 'false' END) AS ddl FROM ${seq}`,
      [seq],
    );
    post.push(rows[0].ddl);
  }
  await client.query(`RESET search_path`);
  return { pre, post };
}

/** What a schema holds that an export does not recreate (it holds no rows). */
async function notIncluded(client: ClientBase, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ what: string }>(
    `SELECT format('view %s', c.relname) AS what FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('v', 'm')
     UNION ALL
     SELECT format('trigger %s on %s', tg.tgname, c.relname) FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT tg.tgisinternal
     UNION ALL
     SELECT format('function %s', p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1
     ORDER BY 1`,
    [schema],
  );
  return rows.map((r) => r.what);
}

/**
 * Writes the export of `schema` into `folder`, in the transaction `client` has open (REPEATABLE
 * READ: every table of one snapshot). Returns its manifest, also written last as
 * manifest.json, so a folder without one is an export that did not finish.
 */
export async function exportSchema(
  client: Client,
  schema: string,
  folder: string,
  fingerprints: Record<string, TableFingerprint>,
): Promise<ExportManifest> {
  const unsupported = await unsupportedColumns(client, schema);
  if (unsupported.length > 0) {
    throw new BackupError(
      `the built-in export cannot recreate ${unsupported.join(', ')}; install a pg_dump of the V1 server's major version (backup mode pg_dump)`,
      { unsupported },
    );
  }
  const meta = await client.query<{ at: Date; version: string }>(
    `SELECT now() AS at, current_setting('server_version') AS version`,
  );
  const ddl = await schemaDdl(client, schema);
  mkdirSync(join(folder, 'data'), { recursive: true });
  writeFileSync(join(folder, 'pre-data.sql'), ddl.pre.map((s) => `${s};\n`).join('\n'));
  writeFileSync(join(folder, 'post-data.sql'), ddl.post.map((s) => `${s};\n`).join('\n'));
  const tables: ExportManifest['tables'] = [];
  const names = await schemaTables(client, schema);
  for (const [i, name] of names.entries()) {
    // Generated columns are computed again on restore; every other column is copied.
    const { rows } = await client.query<{ name: string }>(
      `SELECT attname AS name FROM pg_catalog.pg_attribute
        WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`,
      [`${ident(schema)}.${ident(name)}`],
    );
    const columns = rows.map((r) => r.name);
    const file = join('data', `${String(i + 1).padStart(3, '0')}.copy`);
    const source = client.query(
      copyTo(
        `COPY (SELECT ${columns.map(ident).join(', ')} FROM ONLY ${ident(schema)}.${ident(name)}) TO STDOUT`,
      ),
    );
    await pipeline(source, createWriteStream(join(folder, file)));
    tables.push({ name, file, columns });
  }
  const manifest: ExportManifest = {
    format: 'iot-v2-migration-export/1',
    schema,
    snapshotAt: meta.rows[0].at.toISOString(),
    serverVersion: meta.rows[0].version,
    tables,
    fingerprints,
    notIncluded: await notIncluded(client, schema),
    complete: true,
  };
  writeFileSync(join(folder, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** Reads an export folder's manifest; BackupError when it is missing or unfinished. */
export function readManifest(folder: string): ExportManifest {
  let manifest: ExportManifest;
  try {
    manifest = JSON.parse(readFileSync(join(folder, 'manifest.json'), 'utf8')) as ExportManifest;
  } catch (cause) {
    throw new BackupError(
      `${folder} holds no finished export (manifest.json is missing or unreadable)`,
      { folder },
      { cause },
    );
  }
  if (manifest.format !== 'iot-v2-migration-export/1' || !manifest.complete) {
    throw new BackupError(`${folder} holds no finished export of a known format`, { folder });
  }
  return manifest;
}

/**
 * Restores an export into the database `client` is connected to, in one transaction: schema,
 * rows, then constraints and indexes. The schema's tables must not exist there yet.
 */
export async function restoreExport(client: Client, folder: string): Promise<ExportManifest> {
  const manifest = readManifest(folder);
  await client.query('BEGIN');
  try {
    for (const statement of STABLE_TEXT_SETTINGS) await client.query(statement);
    const clash = await client.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[])`,
      [manifest.schema, manifest.tables.map((t) => t.name)],
    );
    if (clash.rows.length > 0) {
      throw new BackupError(
        `the target database already has ${clash.rows.map((r) => `${manifest.schema}.${r.name}`).join(', ')}; restore into an empty database`,
        { tables: clash.rows.map((r) => r.name) },
      );
    }
    await client.query(readFileSync(join(folder, 'pre-data.sql'), 'utf8'));
    for (const table of manifest.tables) {
      const sink = client.query(
        copyFrom(
          `COPY ${ident(manifest.schema)}.${ident(table.name)} (${table.columns.map(ident).join(', ')}) FROM STDIN`,
        ),
      );
      await pipeline(createReadStream(join(folder, table.file)), sink);
    }
    await client.query(readFileSync(join(folder, 'post-data.sql'), 'utf8'));
    await client.query('COMMIT');
    return manifest;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
