export * from './traffic-router';
export * from './dual-writer';
export {
  parseRepairMessage,
  repairBatchHandler,
  repairMessage,
  repairMessageSchema,
  repairRow,
  REPAIR_MAX_ROUNDS,
  REPAIR_MESSAGE_TYPE,
  type RepairDeps,
  type RepairHooks,
  type RepairMessage,
  type RepairResult,
} from '../lambdas/core/sync/repair';
export { readV1Row, V1_QUERY_TYPES } from '../lambdas/core/sync/v1-read';
export { type ClientSettingsInput } from '../lambdas/core/sync/row-sync';
export * from './shadow-reader';
export {
  CLIENT_TABLES,
  type ClientTable,
  type RowId,
  type TimestampInput,
  type V1Alert,
  type V1Device,
  type V1DeviceData,
  type V1Insert,
  type V1Patch,
  type V1Rows,
  type V1User,
} from './v1-rows';
export * from './prisma';
