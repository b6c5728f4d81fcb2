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
import { AsyncLocalStorage } from 'node:async_hooks';
import { DualWriter } from '../dual-writer';
import { ShadowReader } from '../shadow-reader';
import type { ClientTable } from '../v1-rows';
import { mirrorTo, noChanges, type Changes } from './mirror';
import { modelsOf, type ModelInfo } from './models';
import { idsIn, selectOf, touchesOf, type Touch } from './nested-writes';
import {
  mirrorConcurrencyOf,
  PRISMA_SNAPSHOT_ERROR_METRIC,
  PrismaWriteAfterWriteSwitchError,
  UnsupportedMirroredWriteError,
  type MigrationHandle,
  type PrismaClientLike,
  type WithMigrationOptions,
} from './options';
import {
  asArray,
  isComparable,
  isObject,
  stripId,
  wholeRow,
  withId,
  type ClientObject,
  type Delegate,
  type Row,
} from './rows';

export { V1_PRISMA_MODELS } from './models';
export {
  DEFAULT_MIRROR_CONCURRENCY,
  PRISMA_SNAPSHOT_ERROR_METRIC,
  PrismaWriteAfterWriteSwitchError,
  UnsupportedMirroredWriteError,
  type MigrationHandle,
  type MigrationRouter,
  type PrismaClientLike,
  type WithMigrationOptions,
} from './options';

/** Rows a `deleteMany` deletes per statement (its ids are bound as one array parameter). */
const DELETE_CHUNK = 5_000;

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
 * go through `$migration.writer` then. Adds `$migration` (the router's `route(key)`, the writer)
 * to the client; sampled `findUnique` results are shadow-read on V2.
 */
export function withMigration<C extends PrismaClientLike>(
  prisma: C,
  options: WithMigrationOptions,
): C & { $migration: MigrationHandle } {
  const concurrency = mirrorConcurrencyOf(options);
  const { router } = options;
  const writer = new DualWriter(options);
  const shadow =
    options.shadowReads === false
      ? undefined
      : new ShadowReader({ ...options, ...options.shadowReads, v2: options.v2 });
  const models = modelsOf(prisma);
  const byTable = new Map([...models.values()].map((m) => [m.table, m]));
  const als = new AsyncLocalStorage<Scope>();

  const delegate = (db: ClientObject, info: ModelInfo) => db[info.delegate] as Delegate;

  const mirror = mirrorTo(writer, concurrency);

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
