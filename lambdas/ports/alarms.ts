/**
 * The alarm port: the cutover's health gate asks which alarms are firing. On AWS, CloudWatch
 * DescribeAlarms on the MigrationHealth composite alarm and the alarms it watches
 * (lambdas/adapters/aws/cloudwatch-alarms.ts); locally, a set of alarms a rehearsal or a test
 * can raise (lambdas/adapters/local/local-alarms.ts).
 */
export interface AlarmState {
  name: string;
  state: 'OK' | 'ALARM' | 'INSUFFICIENT_DATA';
  reason?: string;
}

export interface AlarmPort {
  /** The alarms that are in ALARM now (empty when healthy). */
  firing(): Promise<AlarmState[]>;
}
