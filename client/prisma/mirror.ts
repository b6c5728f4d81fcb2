import { TABLE_ORDER } from '../../lambdas/core/mapping';
import type { DualWriter } from '../dual-writer';
import type { ClientTable, V1Rows } from '../v1-rows';
import type { Row } from './rows';

/** What a write changed, mirrored once it is durable. */
export interface Changes {
  /** Whole rows Prisma returned: mirrored as they are. */
  rows: [ClientTable, Row][];
  deleted: [ClientTable, string][];
  /** Rows mirrored by id from V1's committed state. */
  ids: [ClientTable, string][];
}

export const noChanges = (): Changes => ({ rows: [], deleted: [], ids: [] });

/** Runs `work` over `items` with at most `limit` in flight. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  });
  await Promise.all(lanes);
}

function dedupe(ids: [ClientTable, string][]): [ClientTable, string][] {
  return [...new Map(ids.map(([t, id]) => [`${t}:${id}`, [t, id] as [ClientTable, string]])).values()];
}

/**
 * Mirrors a write's changes through the writer, table by table in foreign-key order (a device's
 * new owner before the device), at most `concurrency` V2 writes in flight.
 */
export function mirrorTo(writer: DualWriter, concurrency: number): (changes: Changes) => Promise<void> {
  return async (changes) => {
    for (const table of TABLE_ORDER) {
      const of = <T>(list: [ClientTable, T][]) => list.filter(([t]) => t === table);
      const work: (() => Promise<void>)[] = [
        ...of(changes.rows).map(
          ([t, row]) =>
            () =>
              writer.mirror(t, row as unknown as V1Rows[typeof t]),
        ),
        ...of(changes.deleted).map(
          ([t, id]) =>
            () =>
              writer.mirrorDelete(t, id),
        ),
        ...dedupe(of(changes.ids)).map(
          ([t, id]) =>
            () =>
              writer.mirrorById(t, id),
        ),
      ];
      await eachLimited(work, concurrency, (w) => w());
    }
  };
}
