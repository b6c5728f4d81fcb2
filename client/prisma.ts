import { AsyncLocalStorage } from 'node:async_hooks';
import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { ConfigError, MigrationError } from '../lambdas/core/errors';
import { TABLE_ORDER } from '../lambdas/core/mapping';
import { DualWriter, type DualWriterOptions } from './dual-writer';
import { ShadowReader, type ShadowReaderOptions } from './shadow-reader';
import type { WritePrimary } from '../lambdas/ports/parameters';
import type { TrafficTarget } from './traffic-router';
import type { ClientTable, V1Rows } from './v1-rows';

/**
 * The Prisma integration: `withMigration(prisma, options)` extends the backend's V1 Prisma
 * client (`$extends`) so that every write of the V1 models reaches V2 through the DualWriter,
 * with its guarantees, and the backend's call sites stay as they are.
 *
 * How a write finds the rows it changed: single-row writes return their row (an `id` is added
 * to a `select` that lacks one, and taken out of the result again); `createMany` and
 * `updateMany` run as `createManyAndReturn` / `updateManyAndReturn` selecting only ids (the
 * same statement, with RETURNING); `deleteMany` reads the ids its filter matches first and
 * deletes exactly those (in one transaction); nested writes are followed by reading, before
 * and after the write, the ids of the related rows they name (by the same filters). Each
 * changed row is then mirrored: from the row Prisma returned when it is whole, else by id
 * from V1's committed state (`DualWriter.mirrorById`). V1's database cascades (a deleted
 * device's telemetry and alerts, a deleted user's devices' owner) have the same foreign-key
 * actions in V2.
 */

/** The V1 models of the data contract, by table (Prisma model names of sql/v1/schema.sql). */
export const V1_PRISMA_MODELS: Record<ClientTable, string> = {
  users: 'User',
  devices: 'Device',
  telemetry: 'DeviceData',
  alerts: 'Alert',
};

/** The V1 tables (`@@map`) of the models, as Prisma's data model names them. */
const V1_DB_TABLES: Record<string, ClientTable> = {
  users: 'users',
  devices: 'devices',
  device_data: 'telemetry',
  alerts: 'alerts',
};

/**
 * Every V1 column (= Prisma field) of each table, and those a nested create can be found
 * back by (JSON columns are not compared).
 */
const V1_COLUMNS: Record<ClientTable, { all: string[]; comparable: string[] }> = {
  users: {
    all: ['id', 'email', 'name', 'passwordHash', 'role', 'createdAt', 'updatedAt'],
    comparable: ['id', 'email', 'name', 'passwordHash', 'role', 'createdAt', 'updatedAt'],
  },
  devices: {
    all: ['id', 'name', 'type', 'status', 'config', 'ownerId', 'lastSeenAt', 'createdAt', 'updatedAt'],
    comparable: ['id', 'name', 'type', 'status', 'ownerId', 'lastSeenAt', 'createdAt', 'updatedAt'],
  },
  telemetry: {
    all: ['id', 'deviceId', 'timestamp', 'data', 'protocol', 'source'],
    comparable: ['id', 'deviceId', 'timestamp', 'protocol', 'source'],
  },
  alerts: {
    all: ['id', 'deviceId', 'severity', 'message', 'status', 'createdAt', 'resolvedAt'],
    comparable: ['id', 'deviceId', 'severity', 'message', 'status', 'createdAt', 'resolvedAt'],
  },
};

/**
 * The V1 contract's foreign keys, as (child table → parent table): a relation field from the
 * child to the parent is to-one, from the parent to the child to-many.
 */
const FOREIGN_KEYS: [ClientTable, ClientTable][] = [
  ['devices', 'users'],
  ['telemetry', 'devices'],
  ['alerts', 'devices'],
];

/** The relation fields of the reference schema (prisma/v1/schema.prisma). */
const DEFAULT_RELATIONS: Record<ClientTable, Record<string, ClientTable>> = {
  users: { devices: 'devices' },
  devices: { owner: 'users', data: 'telemetry', alerts: 'alerts' },
  telemetry: { device: 'devices' },
  alerts: { device: 'devices' },
};

/** Rows a `deleteMany` deletes per statement (its ids are bound as one array parameter). */
const DELETE_CHUNK = 5_000;

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

type Row = Record<string, unknown>;
type Delegate = Record<string, (args: unknown) => Promise<unknown>>;
type ClientObject = Record<string, unknown> & {
  $transaction(arg: unknown, options?: unknown): Promise<unknown>;
};

interface Relation {
  table: ClientTable;
  toOne: boolean;
}

interface ModelInfo {
  model: string;
  table: ClientTable;
  /** The client's property for the model (`deviceData`). */
  delegate: string;
  relations: Record<string, Relation>;
}

/** Where a write runs: an interactive transaction (mirrored at commit), a batch, or neither. */
interface Scope {
  kind: 'itx' | 'batch';
  /** The transaction's client (interactive transactions). */
  tx?: ClientObject;
  /**
   * Rows to mirror by id once the transaction has committed; `first` marks ids the
   * transaction deleted or may have moved away (mirrored before the others).
   */
  pending: Map<string, { table: ClientTable; id: string; first: boolean }>;
  /** Queries the extension makes itself inside its own transaction: passed through. */
  raw?: boolean;
}

/** What a write changed, mirrored once it is durable. */
interface Changes {
  rows: [ClientTable, Row][];
  deleted: [ClientTable, string][];
  /**
   * Ids read before a write that may have taken them out of V1 (an update of the id itself):
   * mirrored by id, before the table's other rows.
   */
  gone: [ClientTable, string][];
  ids: [ClientTable, string][];
}

const noChanges = (): Changes => ({ rows: [], deleted: [], gone: [], ids: [] });

const isObject = (v: unknown): v is Row => typeof v === 'object' && v !== null && !Array.isArray(v);
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);
const isComparable = (v: unknown) =>
  typeof v === 'string' ||
  typeof v === 'number' ||
  typeof v === 'boolean' ||
  typeof v === 'bigint' ||
  v instanceof Date;

/**
 * The V1 models of a client: from the client's own data model when it exposes one (so renamed
 * relation fields are found), else the reference schema's names.
 */
function modelsOf(prisma: unknown): Map<string, ModelInfo> {
  const runtime = (prisma as { _runtimeDataModel?: unknown })._runtimeDataModel as
    | {
        models?: Record<
          string,
          { dbName?: string | null; fields?: { name: string; kind: string; type: string }[] }
        >;
      }
    | undefined;
  const out = new Map<string, ModelInfo>();
  const toOne = (from: ClientTable, to: ClientTable) => FOREIGN_KEYS.some(([c, p]) => c === from && p === to);
  if (runtime?.models) {
    const tables = new Map<string, ClientTable>();
    for (const [name, m] of Object.entries(runtime.models)) {
      const table = V1_DB_TABLES[m.dbName ?? name];
      if (table) tables.set(name, table);
    }
    for (const [name, table] of tables) {
      const relations: Record<string, Relation> = {};
      for (const f of runtime.models[name].fields ?? []) {
        const target = tables.get(f.type);
        if (f.kind === 'object' && target) relations[f.name] = { table: target, toOne: toOne(table, target) };
      }
      out.set(name, { model: name, table, delegate: lowerFirst(name), relations });
    }
    if (out.size > 0) return out;
  }
  for (const [table, model] of Object.entries(V1_PRISMA_MODELS) as [ClientTable, string][]) {
    const relations = Object.fromEntries(
      Object.entries(DEFAULT_RELATIONS[table]).map(([f, t]) => [f, { table: t, toOne: toOne(table, t) }]),
    );
    out.set(model, { model, table, delegate: lowerFirst(model), relations });
  }
  return out;
}

/** The related rows a nested write names, per relation field, to be read before and after it. */
interface Touch {
  relation: Relation;
  /** Read every related row (a `set`, or a create that cannot be found back by value). */
  all: boolean;
  filters: Row[];
  children: Map<string, Touch>;
}

/** Collects the relation fields a write's data touches (recursively). */
function touchesOf(
  models: Map<string, ModelInfo>,
  byTable: Map<ClientTable, ModelInfo>,
  table: ClientTable,
  data: unknown,
  into: Map<string, Touch> = new Map(),
): Map<string, Touch> {
  const info = byTable.get(table);
  if (!info) return into;
  for (const item of asArray(data)) {
    if (!isObject(item)) continue;
    for (const [field, value] of Object.entries(item)) {
      const relation = info.relations[field];
      if (!relation || !isObject(value)) continue;
      const touch: Touch = into.get(field) ?? { relation, all: false, filters: [], children: new Map() };
      const before = touch.all || touch.filters.length > 0 || touch.children.size > 0;
      const filter = (where: unknown) => {
        if (isObject(where) && Object.keys(where).length > 0) touch.filters.push(where);
        else touch.all = true;
      };
      const created = (row: unknown) => {
        filter(findBack(relation.table, row));
        touchesOf(models, byTable, relation.table, row, touch.children);
      };
      for (const [op, payload] of Object.entries(value)) {
        const items = asArray(payload);
        switch (op) {
          case 'create':
            items.forEach(created);
            break;
          case 'createMany':
            for (const p of items) for (const row of asArray(isObject(p) ? p.data : undefined)) created(row);
            break;
          case 'connectOrCreate':
            for (const p of items) {
              if (!isObject(p)) continue;
              filter(p.where);
              created(p.create);
            }
            break;
          case 'connect':
          case 'disconnect':
            // To-one: the foreign key is the parent's own column; to-many: the children's.
            if (!relation.toOne) items.forEach(filter);
            break;
          case 'set':
            touch.all = true;
            break;
          case 'update':
            for (const p of items) {
              if (!isObject(p)) continue;
              if (relation.toOne) touch.all = true;
              else filter(p.where);
              // `{ where, data }`, or (to-one) the data itself: both are looked at.
              touchesOf(models, byTable, relation.table, p, touch.children);
              if (isObject(p.data)) touchesOf(models, byTable, relation.table, p.data, touch.children);
            }
            break;
          case 'updateMany':
          case 'deleteMany':
            for (const p of items) filter(op === 'updateMany' && isObject(p) ? p.where : p);
            break;
          case 'upsert':
            for (const p of items) {
              if (!isObject(p)) continue;
              if (relation.toOne) touch.all = true;
              else filter(p.where);
              created(p.create);
              touchesOf(models, byTable, relation.table, p.update, touch.children);
            }
            break;
          case 'delete':
            if (relation.toOne) touch.all = true;
            else items.forEach(filter);
            break;
          default:
            break;
        }
      }
      const after = touch.all || touch.filters.length > 0 || touch.children.size > 0;
      if (after || before) into.set(field, touch);
    }
  }
  return into;
}

/** A filter that finds a just-created row again: its id when given, else its given values. */
function findBack(table: ClientTable, row: unknown): Row | undefined {
  if (!isObject(row)) return undefined;
  if (isComparable(row.id)) return { id: row.id };
  const filter = Object.fromEntries(
    V1_COLUMNS[table].comparable.filter((c) => isComparable(row[c])).map((c) => [c, row[c]]),
  );
  return Object.keys(filter).length > 0 ? filter : undefined;
}

/** The `select` that reads a row's id and the ids of the related rows a write touches. */
function selectOf(touches: Map<string, Touch>): Row {
  const select: Row = { id: true };
  for (const [field, t] of touches) {
    const sub = { select: selectOf(t.children) };
    select[field] =
      t.relation.toOne || t.all || t.filters.length === 0 ? sub : { ...sub, where: { OR: t.filters } };
  }
  return select;
}

/** The (table, id) of every row in a snapshot read with `selectOf`. */
function idsIn(table: ClientTable, touches: Map<string, Touch>, row: unknown, out: [ClientTable, string][]) {
  for (const item of asArray(row)) {
    if (!isObject(item)) continue;
    if (item.id !== undefined && item.id !== null) out.push([table, String(item.id)]);
    for (const [field, t] of touches) idsIn(t.relation.table, t.children, item[field], out);
  }
}

/** A V1 row as the DualWriter takes it, when Prisma returned every column (else undefined). */
function wholeRow(table: ClientTable, row: unknown): Row | undefined {
  if (!isObject(row)) return undefined;
  const columns = V1_COLUMNS[table].all;
  if (!columns.every((c) => c in row)) return undefined;
  const out = Object.fromEntries(columns.map((c) => [c, row[c]]));
  if (table === 'telemetry') out.id = String(out.id);
  return out;
}

/** Makes sure a result carries `id`: returns the args to run and whether to take it out again. */
function withId(args: Row): { args: Row; strip: boolean } {
  if (isObject(args.select) && args.select.id !== true) {
    return { args: { ...args, select: { ...args.select, id: true } }, strip: true };
  }
  if (isObject(args.omit) && args.omit.id === true) {
    return { args: { ...args, omit: { ...args.omit, id: false } }, strip: true };
  }
  return { args, strip: false };
}

function stripId<R>(result: R, strip: boolean): R {
  if (!strip) return result;
  for (const row of asArray(result)) if (isObject(row)) delete row.id;
  return result;
}

/** Runs `work` over `items` with at most `limit` in flight. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  });
  await Promise.all(lanes);
}

type QueryParams = {
  model?: string;
  operation: string;
  args: unknown;
  query: (args: unknown) => Promise<unknown>;
  __internalParams?: { transaction?: { kind?: string } };
};

const SINGLE_ROW_WRITES = new Set(['create', 'update', 'upsert', 'delete']);
const MANY_WRITES = new Set([
  'createMany',
  'createManyAndReturn',
  'updateMany',
  'updateManyAndReturn',
  'deleteMany',
]);

/**
 * Extends the backend's V1 Prisma client so that every write of the V1 models (User, Device,
 * DeviceData, Alert) is mirrored to V2 with the DualWriter's guarantees: the caller gets V1's
 * result and V1's errors; a V2 failure never fails the caller and goes to the repair queue; two
 * writes of one row that reach V2 out of order still leave V2 as V1 ends. Writes inside an
 * interactive `$transaction` are mirrored after it commits, and not at all when it rolls back.
 * With dual-write off, every call passes straight through. While the writes are switched to V2,
 * writes of the V1 models are refused (PrismaWriteAfterWriteSwitchError, nothing written): they
 * go through `$migration.writer` then. Adds `$migration` (the router's
 * `route(key)`, the writer) to the client; sampled `findUnique` results are shadow-read on V2.
 */
export function withMigration<C extends PrismaClientLike>(
  prisma: C,
  options: WithMigrationOptions,
): C & { $migration: MigrationHandle } {
  const parsed = optionsSchema.safeParse({ mirrorConcurrency: options.mirrorConcurrency });
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'withMigration options');
  const concurrency = parsed.data.mirrorConcurrency;
  const { router } = options;
  for (const method of ['dualWriteEnabled', 'route'] as const) {
    if (typeof router?.[method] !== 'function') {
      throw new ConfigError(
        [{ field: 'router', problem: `must have a ${method}() method (a TrafficRouter)` }],
        'withMigration options',
      );
    }
  }
  const writer = new DualWriter(options);
  const shadow =
    options.shadowReads === false
      ? undefined
      : new ShadowReader({ ...options, ...options.shadowReads, v2: options.v2 });
  const models = modelsOf(prisma);
  const byTable = new Map([...models.values()].map((m) => [m.table, m]));
  const als = new AsyncLocalStorage<Scope>();

  const delegate = (db: ClientObject, info: ModelInfo) => db[info.delegate] as Delegate;

  /**
   * Mirrors table by table in foreign-key order (a device's new owner before the device). In a
   * table, deletes and re-reads of the ids a write may have moved away go first, and only then
   * the rows written and the other ids: a renamed row's old id must leave V2 before its new id
   * arrives, or V2's unique keys (a user's email) refuse the new one.
   */
  async function mirror(changes: Changes): Promise<void> {
    for (const table of TABLE_ORDER) {
      const of = (list: [ClientTable, string][]) => dedupe(list.filter(([t]) => t === table));
      const deleted = of(changes.deleted);
      const gone = of(changes.gone);
      const first = new Set([...deleted, ...gone].map(([, id]) => id));
      const removals: (() => Promise<void>)[] = [
        ...deleted.map(([t, id]) => () => writer.mirrorDelete(t, id, 'v1')),
        ...gone
          .filter(([, id]) => !deleted.some(([, d]) => d === id))
          .map(([t, id]) => () => writer.mirrorById(t, id, 'v1')),
      ];
      const writes: (() => Promise<void>)[] = [
        ...of(changes.ids)
          .filter(([, id]) => !first.has(id))
          .map(([t, id]) => () => writer.mirrorById(t, id, 'v1')),
        ...changes.rows
          .filter(([t]) => t === table)
          .map(([t, row]) => () => writer.mirror(t, row as unknown as V1Rows[typeof t], 'v1')),
      ];
      await eachLimited(removals, concurrency, (w) => w());
      await eachLimited(writes, concurrency, (w) => w());
    }
  }

  function dedupe(ids: [ClientTable, string][]): [ClientTable, string][] {
    return [...new Map(ids.map(([t, id]) => [`${t}:${id}`, [t, id] as [ClientTable, string]])).values()];
  }

  /** Mirrors now, or (inside a transaction) once it has committed. */
  async function record(scope: Scope | undefined, changes: Changes): Promise<void> {
    if (!scope) return mirror(changes);
    const add = (table: ClientTable, id: string, first: boolean) => {
      const key = `${table}:${id}`;
      scope.pending.set(key, { table, id, first: first || scope.pending.get(key)?.first === true });
    };
    for (const [t, row] of changes.rows) add(t, String(row.id), false);
    for (const [t, id] of changes.ids) add(t, id, false);
    for (const [t, id] of [...changes.deleted, ...changes.gone]) add(t, id, true);
  }

  async function flush(scope: Scope): Promise<void> {
    const pending = [...scope.pending.values()];
    const pairs = (first: boolean) =>
      pending.filter((p) => p.first === first).map((p) => [p.table, p.id] as [ClientTable, string]);
    await mirror({ ...noChanges(), gone: pairs(true), ids: pairs(false) });
  }

  /** Runs `work` in an interactive transaction of the extension's own, mirrored at commit. */
  async function ownTransaction<R>(work: (tx: ClientObject) => Promise<R>): Promise<R> {
    const scope: Scope = { kind: 'itx', pending: new Map() };
    const result = await self.$transaction((tx: ClientObject) =>
      als.run({ ...scope, tx, raw: true }, () => work(tx)),
    );
    return result as R;
  }

  async function snapshot(db: ClientObject, info: ModelInfo, where: unknown, touches: Map<string, Touch>) {
    const row = await delegate(db, info).findUnique({ where, select: selectOf(touches) });
    const out: [ClientTable, string][] = [];
    idsIn(info.table, touches, row, out);
    return out;
  }

  async function write(params: QueryParams, info: ModelInfo): Promise<unknown> {
    const { operation, query } = params;
    const args = (isObject(params.args) ? params.args : {}) as Row;
    const store = als.getStore();
    if (store?.raw) return query(args);
    // A query of the outer client made inside a transaction's callback is not part of it:
    // Prisma tells which transaction a query runs in (when it does not, the context decides).
    const internal = params.__internalParams;
    const txKind = internal ? internal.transaction?.kind : store?.kind;
    const scope = store && txKind === store.kind ? store : undefined;
    const db = scope?.kind === 'itx' && scope.tx ? scope.tx : self;
    const table = info.table;
    const changes = noChanges();

    if (SINGLE_ROW_WRITES.has(operation)) {
      const data = operation === 'upsert' ? [args.create, args.update] : args.data;
      const touches = touchesOf(models, byTable, table, data);
      // An update of the id itself: the old id is gone from V1, and must go from V2 too.
      const updated = operation === 'update' ? args.data : operation === 'upsert' ? args.update : undefined;
      const changesId = isObject(updated) && 'id' in updated;
      if (touches.size === 0 && !changesId) {
        const run = withId(args);
        const result = await query(run.args);
        const id = isObject(result) ? result.id : undefined;
        const whole = run.strip ? undefined : wholeRow(table, result);
        if (operation === 'delete') changes.deleted.push([table, String(id)]);
        else if (whole && !scope) changes.rows.push([table, whole]);
        else changes.ids.push([table, String(id)]);
        await record(scope, changes);
        return stripId(result, run.strip);
      }
      if (scope?.kind === 'batch') {
        throw new UnsupportedMirroredWriteError(
          info.model,
          operation,
          'a nested write in a batch transaction',
        );
      }
      const before = operation === 'create' ? [] : await snapshot(db, info, args.where, touches);
      const run = withId(args);
      const result = await query(run.args);
      const id = isObject(result) ? result.id : undefined;
      // V1's write is done and is the caller's: a failed read of the related ids must not undo
      // that. The rows it knows are mirrored; the others are left to Phase 3's window repair.
      const after = await snapshot(db, info, { id }, touches).catch(() => {
        options.onMetric?.(PRISMA_SNAPSHOT_ERROR_METRIC, 1);
        return [[table, String(id)]] as [ClientTable, string][];
      });
      // Without a change of id, `before` holds the rows the write touched (and may have
      // detached); with one, it also holds the old id, now gone from V1.
      changes.gone.push(...before);
      changes.ids.push(...after);
      await record(scope, changes);
      return stripId(result, run.strip);
    }

    const many = asArray(args.data);
    const idsGiven = many.length > 0 && many.every((d) => isObject(d) && isComparable(d.id));
    if (scope?.kind === 'batch' && !(operation === 'createMany' && idsGiven)) {
      throw new UnsupportedMirroredWriteError(
        info.model,
        operation,
        'its rows cannot be known inside a batch transaction',
      );
    }
    switch (operation) {
      case 'createMany': {
        if (idsGiven) {
          const result = await query(args);
          changes.ids.push(...many.map((d) => [table, String((d as Row).id)] as [ClientTable, string]));
          await record(scope, changes);
          return result;
        }
        // The same INSERT with RETURNING id: mirrored by its own hook (createManyAndReturn).
        const rows = (await delegate(db, info).createManyAndReturn({
          ...args,
          select: { id: true },
        })) as unknown[];
        return { count: rows.length };
      }
      case 'updateMany': {
        const rows = (await delegate(db, info).updateManyAndReturn({
          ...args,
          select: { id: true },
        })) as unknown[];
        return { count: rows.length };
      }
      case 'createManyAndReturn':
      case 'updateManyAndReturn': {
        // An update of ids: the old ids are gone from V1, and mirrored as deleted.
        const before =
          operation === 'updateManyAndReturn' && many.some((d) => isObject(d) && 'id' in d)
            ? await ids(db, info, args.where)
            : [];
        const run = withId(args);
        const result = (await query(run.args)) as unknown[];
        for (const row of result) {
          const whole = run.strip ? undefined : wholeRow(table, row);
          if (whole && !scope) changes.rows.push([table, whole]);
          else changes.ids.push([table, String((row as Row).id)]);
        }
        changes.gone.push(...before.map((id) => [table, id] as [ClientTable, string]));
        await record(scope, changes);
        return stripId(result, run.strip);
      }
      case 'deleteMany':
        return deleteMany(args, info, scope, db, query);
      default:
        return query(args);
    }
  }

  async function ids(db: ClientObject, info: ModelInfo, where: unknown): Promise<string[]> {
    const rows = (await delegate(db, info).findMany({ where, select: { id: true } })) as Row[];
    return rows.map((r) => String(r.id));
  }

  /**
   * Reads the ids the filter matches, then deletes exactly those rows that still match it: a
   * row that a concurrent write makes match only later is left, as if the delete had run a
   * moment earlier. Each deleted id is mirrored as deleted (V2's cascades follow V1's).
   */
  async function deleteMany(
    args: Row,
    info: ModelInfo,
    scope: Scope | undefined,
    db: ClientObject,
    query: (args: unknown) => Promise<unknown>,
  ): Promise<unknown> {
    const matched = await ids(db, info, args.where);
    const key = (id: string) => (info.table === 'telemetry' ? BigInt(id) : id);
    const restricted = (chunk: string[]) => ({
      ...args,
      where: { AND: [args.where ?? {}, { id: { in: chunk.map(key) } }] },
    });
    const chunks: string[][] = [];
    for (let i = 0; i < matched.length; i += DELETE_CHUNK) chunks.push(matched.slice(i, i + DELETE_CHUNK));
    let count = 0;
    if (chunks.length <= 1) {
      count = ((await query(restricted(chunks[0] ?? []))) as { count: number }).count;
    } else {
      // Several statements: atomic within the caller's transaction, or one of the extension's own.
      const deleteAll = async (tx: ClientObject) => {
        for (const chunk of chunks) {
          count += ((await delegate(tx, info).deleteMany(restricted(chunk))) as { count: number }).count;
        }
      };
      if (scope) await als.run({ ...scope, raw: true }, () => deleteAll(db));
      else await ownTransaction(deleteAll);
    }
    await record(scope, { ...noChanges(), deleted: matched.map((id) => [info.table, id]) });
    return { count };
  }

  async function read(params: QueryParams, info: ModelInfo): Promise<unknown> {
    const result = await params.query(params.args);
    const args = (isObject(params.args) ? params.args : {}) as Row;
    if (!shadow || als.getStore() || !router.dualWriteEnabled()) return result;
    if (args.select !== undefined || args.omit !== undefined) return result;
    const where = isObject(args.where) ? args.where : {};
    const whole = wholeRow(info.table, result);
    if (whole) shadow.observe(info.table, whole);
    else if (result === null && isComparable(where.id)) {
      void shadow.read(info.table, where.id as string, async () => null);
    }
    return result;
  }

  const extension = {
    name: 'iot-v2-migration',
    query: {
      $allModels: {
        async $allOperations(params: QueryParams): Promise<unknown> {
          const info = params.model ? models.get(params.model) : undefined;
          if (!info) return params.query(params.args);
          if (SINGLE_ROW_WRITES.has(params.operation) || MANY_WRITES.has(params.operation)) {
            if (router.writePrimary?.() === 'v2') {
              throw new PrismaWriteAfterWriteSwitchError(info.model, params.operation);
            }
            if (!router.dualWriteEnabled()) return params.query(params.args);
            return write(params, info);
          }
          if (params.operation === 'findUnique' || params.operation === 'findUniqueOrThrow') {
            return read(params, info);
          }
          return params.query(params.args);
        },
      },
    },
  };

  const handle: MigrationHandle = {
    route: (key) => router.route(key),
    dualWriteEnabled: () => router.dualWriteEnabled(),
    writePrimary: () => (router.writePrimary?.() === 'v2' ? 'v2' : 'v1'),
    writer,
    idle: async () => {
      await shadow?.idle();
    },
  };

  async function transaction(client: ClientObject, arg: unknown, txOptions?: unknown): Promise<unknown> {
    if (typeof arg === 'function') {
      const scope: Scope = { kind: 'itx', pending: new Map() };
      const fn = arg as (tx: unknown) => Promise<unknown>;
      const result = await client.$transaction(
        (tx: ClientObject) => als.run({ ...scope, tx }, () => fn(tx)),
        txOptions,
      );
      // Committed: only now does V2 hear of it (a rollback rejected above, and nothing is sent).
      await flush(scope);
      return result;
    }
    const scope: Scope = { kind: 'batch', pending: new Map() };
    const result = await als.run(scope, () => client.$transaction(arg, txOptions));
    await flush(scope);
    return result;
  }

  function wrap(client: ClientObject): ClientObject {
    return new Proxy(client, {
      get(target, property) {
        if (property === '$migration') return handle;
        if (property === '$transaction') {
          return (arg: unknown, txOptions?: unknown) => transaction(target, arg, txOptions);
        }
        if (property === '$extends') {
          return (...more: unknown[]) =>
            wrap((target.$extends as (...a: unknown[]) => ClientObject).apply(target, more));
        }
        const value = Reflect.get(target, property, target) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  // The extended client: what the extension's own queries outside a transaction run on.
  const self = prisma.$extends(extension) as ClientObject;
  return wrap(self) as unknown as C & { $migration: MigrationHandle };
}
