export * from './traffic-router';
export * from './dual-writer';
export * from './repair-worker';
export * from './shadow-reader';
export {
  CLIENT_TABLES,
  V1_QUERY_TYPES,
  readV1Row,
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
export { type ClientSettingsInput } from './v2-sync';
export * from './prisma';
