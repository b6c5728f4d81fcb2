import type { ClientTable } from '../v1-rows';

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

/** A relation field: the table it leads to, and whether it names one row (child → parent). */
export interface Relation {
  table: ClientTable;
  toOne: boolean;
}

/** A V1 model of the client: its table, its delegate and its relation fields. */
export interface ModelInfo {
  model: string;
  table: ClientTable;
  /** The client's property for the model (`deviceData`). */
  delegate: string;
  relations: Record<string, Relation>;
}

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);

/**
 * The V1 models of a client: from the client's own data model when it exposes one (so renamed
 * relation fields are found), else the reference schema's names.
 */
export function modelsOf(prisma: unknown): Map<string, ModelInfo> {
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
