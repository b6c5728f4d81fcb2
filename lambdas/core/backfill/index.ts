/** Phase 2's backfill: planning windows, pumping them to the workers, copying one window. */
export { planBackfill, type PlanResult } from './plan';
export { backfillProgress, pumpBackfill, type BackfillProgress, type TableProgress } from './progress';
export { copyWindow, type BackfillDeps, type CopyResult } from './copy';
export {
  buildDeferredIndexes,
  buildReadyPartitionIndexes,
  pendingIndexes,
  type BuiltIndex,
} from './deferred-indexes';
