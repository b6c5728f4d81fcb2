import type { MappedTable } from '../../lambdas/core/mapping';
import type { QueuePort } from '../../lambdas/ports/queue';

export const TABLES: MappedTable[] = ['users', 'devices', 'telemetry', 'alerts'];

/** A queue port that keeps what it was sent; `fail` makes it reject like a failed SendMessageBatch. */
export function recordingQueue(): QueuePort & { bodies: string[]; fail: boolean } {
  const queue = {
    bodies: [] as string[],
    fail: false,
    async sendAll(bodies: readonly string[]) {
      if (queue.fail) throw new Error('SQS is unreachable (test)');
      queue.bodies.push(...bodies);
      return { sent: bodies.length, calls: 1 };
    },
  };
  return queue;
}

/** A router stand-in whose dual-write switch a test flips. */
export function dualWriteSwitch(on = true) {
  return {
    on,
    dualWriteEnabled() {
      return this.on;
    },
  };
}

export function recorder() {
  const metrics: [string, number][] = [];
  const count = (name: string) => metrics.filter(([n]) => n === name).reduce((a, [, v]) => a + v, 0);
  return { metrics, count, onMetric: (name: string, value: number) => void metrics.push([name, value]) };
}

export { expectAllInSync, expectRowInSync, v2RowsOf } from '../support/in-sync';
