import { eachLimited } from '../../lambdas/core/each-limited';
import { TABLE_ORDER } from '../../lambdas/core/mapping';
import type { DualWriter } from '../dual-writer';
import type { ClientTable, V1Rows } from '../v1-rows';
import type { Row } from './rows';

/** What a write changed, mirrored once it is durable. */
export interface Changes {
  /** Whole rows Prisma returned: mirrored as they are. */
  rows: [ClientTable, Row][];
  deleted: [ClientTable, string][];
  /**
   * Ids read before a write that may have taken them out of V1 (an update of the id itself):
   * mirrored by id, before the table's other rows.
   */
  gone: [ClientTable, string][];
  /** Rows mirrored by id from V1's committed state. */
  ids: [ClientTable, string][];
}

export const noChanges = (): Changes => ({ rows: [], deleted: [], gone: [], ids: [] });

function dedupe(ids: [ClientTable, string][]): [ClientTable, string][] {
  return [...new Map(ids.map(([t, id]) => [`${t}:${id}`, [t, id] as [ClientTable, string]])).values()];
}

/**
 * Mirrors a write's changes through the writer, table by table in foreign-key order (a device's
 * new owner before the device), at most `concurrency` V2 writes in flight. In a table, deletes
 * and re-reads of the ids a write may have moved away go first, and only then the rows written
 * and the other ids: a renamed row's old id must leave V2 before its new id arrives, or V2's
 * unique keys (a user's email) refuse the new one.
 */
export function mirrorTo(writer: DualWriter, concurrency: number): (changes: Changes) => Promise<void> {
  return async (changes) => {
    for (const table of TABLE_ORDER) {
      const of = (list: [ClientTable, string][]) => dedupe(list.filter(([t]) => t === table));
      const deleted = of(changes.deleted);
      const gone = of(changes.gone);
      const first = new Set([...deleted, ...gone].map(([, id]) => id));
      const removals: (() => Promise<void>)[] = [
        ...deleted.map(
          ([t, id]) =>
            () =>
              writer.mirrorDelete(t, id, 'v1'),
        ),
        ...gone
          .filter(([, id]) => !deleted.some(([, d]) => d === id))
          .map(
            ([t, id]) =>
              () =>
                writer.mirrorById(t, id, 'v1'),
          ),
      ];
      const writes: (() => Promise<void>)[] = [
        ...of(changes.ids)
          .filter(([, id]) => !first.has(id))
          .map(
            ([t, id]) =>
              () =>
                writer.mirrorById(t, id, 'v1'),
          ),
        ...changes.rows
          .filter(([t]) => t === table)
          .map(
            ([t, row]) =>
              () =>
                writer.mirror(t, row as unknown as V1Rows[typeof t], 'v1'),
          ),
      ];
      await eachLimited(removals, concurrency, (w) => w());
      await eachLimited(writes, concurrency, (w) => w());
    }
  };
}
