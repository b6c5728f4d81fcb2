import type { ClientTable } from '../v1-rows';
import type { ModelInfo, Relation } from './models';
import { asArray, comparableFields, isComparable, isObject, type Row } from './rows';

/**
 * Nested writes: which related rows a write's data names (by relation field and filter), so that
 * their ids can be read before and after the write and each changed row mirrored.
 */

/** The related rows a nested write names, per relation field, to be read before and after it. */
export interface Touch {
  relation: Relation;
  /** Read every related row (a `set`, or a create that cannot be found back by value). */
  all: boolean;
  filters: Row[];
  children: Map<string, Touch>;
}

/** Collects the relation fields a write's data touches (recursively). */
export function touchesOf(
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
      // An update or upsert of existing children: to-one, the parent's own child (its foreign
      // key may move); to-many, the children its `where` names.
      const existing = (where: unknown) => {
        if (relation.toOne) touch.all = true;
        else filter(where);
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
          case 'upsert':
            // The child its `where` names (an upsert's may be updated), or the one it creates.
            for (const p of items) {
              if (!isObject(p)) continue;
              if (op === 'upsert') existing(p.where);
              else filter(p.where);
              created(p.create);
              if (op === 'upsert') touchesOf(models, byTable, relation.table, p.update, touch.children);
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
              existing(p.where);
              // `{ where, data }`, or (to-one) the data itself: both are looked at.
              touchesOf(models, byTable, relation.table, p, touch.children);
              if (isObject(p.data)) touchesOf(models, byTable, relation.table, p.data, touch.children);
            }
            break;
          case 'updateMany':
          case 'deleteMany':
            for (const p of items) filter(op === 'updateMany' && isObject(p) ? p.where : p);
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
export function findBack(table: ClientTable, row: unknown): Row | undefined {
  if (!isObject(row)) return undefined;
  if (isComparable(row.id)) return { id: row.id };
  const filter = Object.fromEntries(
    comparableFields(table)
      .filter((c) => isComparable(row[c]))
      .map((c) => [c, row[c]]),
  );
  return Object.keys(filter).length > 0 ? filter : undefined;
}

/** The `select` that reads a row's id and the ids of the related rows a write touches. */
export function selectOf(touches: Map<string, Touch>): Row {
  const select: Row = { id: true };
  for (const [field, t] of touches) {
    const sub = { select: selectOf(t.children) };
    select[field] =
      t.relation.toOne || t.all || t.filters.length === 0 ? sub : { ...sub, where: { OR: t.filters } };
  }
  return select;
}

/** The (table, id) of every row in a snapshot read with `selectOf`. */
export function idsIn(
  table: ClientTable,
  touches: Map<string, Touch>,
  row: unknown,
  out: [ClientTable, string][],
) {
  for (const item of asArray(row)) {
    if (!isObject(item)) continue;
    if (item.id !== undefined && item.id !== null) out.push([table, String(item.id)]);
    for (const [field, t] of touches) idsIn(t.relation.table, t.children, item[field], out);
  }
}
