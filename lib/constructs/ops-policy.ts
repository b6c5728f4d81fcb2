import { Arn, ArnFormat, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

export interface OpsPolicyProps {
  /**
   * The state machines ops start: Migration (advance, status, drop-archives), Cutover (run,
   * step, hold, resume) and Rollback (what ops start in an emergency, as the alarm does).
   */
  readonly stateMachines: readonly sfn.IStateMachine[];
}

/**
 * The managed policy of the people who drive the migration: attach it to an ops role (or group)
 * instead of handing out `states:StartExecution` on everything. It may start the Migration,
 * Cutover and Rollback state machines and read and stop their executions (what the console's
 * runbook and the `migrate` CLI do), and nothing else: no Lambda invocation, no secret, no switch.
 */
export class OpsPolicy extends Construct {
  public readonly policy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: OpsPolicyProps) {
    super(scope, id);
    const machines = props.stateMachines;
    if (machines.length === 0) throw new Error(`${this.node.path}: give at least one state machine`);
    const executions = machines.map((machine) =>
      Stack.of(this).formatArn({
        service: 'states',
        resource: 'execution',
        resourceName: `${nameOf(machine)}:*`,
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      }),
    );
    this.policy = new iam.ManagedPolicy(this, 'Policy', {
      description: 'Drive the V1 to V2 migration: start its state machines, read and stop their executions',
      statements: [
        new iam.PolicyStatement({
          sid: 'StartMigrationExecutions',
          actions: ['states:StartExecution', 'states:DescribeStateMachine', 'states:ListExecutions'],
          resources: machines.map((machine) => machine.stateMachineArn),
        }),
        new iam.PolicyStatement({
          sid: 'FollowMigrationExecutions',
          actions: ['states:DescribeExecution', 'states:GetExecutionHistory', 'states:StopExecution'],
          resources: executions,
        }),
      ],
    });
    // cdk-nag names each finding by the resource as it reads it: <LogicalId.Name> for a machine
    // of this stack.
    for (const machine of machines) {
      Validations.of(this.policy).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${nagName(this, machine)}:*]`,
        reason:
          'Execution names are chosen when an execution starts (the CLI names them <command>-<time>-<random>); ' +
          'the wildcard is only the execution name, under one of the migration’s state machines',
      });
    }
  }
}

/** How cdk-nag writes a state machine's name in a finding: `<LogicalId.Name>`, or the name itself. */
function nagName(scope: Construct, machine: sfn.IStateMachine): string {
  const resolved: unknown = Stack.of(scope).resolve(nameOf(machine));
  if (typeof resolved === 'string') return resolved;
  const getAtt = (resolved as { 'Fn::GetAtt'?: [string, string] })['Fn::GetAtt'];
  return getAtt ? `<${getAtt[0]}.${getAtt[1]}>` : JSON.stringify(resolved);
}

/** A state machine's name: its own attribute when it has one, else the last part of its ARN. */
function nameOf(machine: sfn.IStateMachine): string {
  return (
    (machine as Partial<Pick<sfn.StateMachine, 'stateMachineName'>>).stateMachineName ??
    Arn.split(machine.stateMachineArn, ArnFormat.COLON_RESOURCE_NAME).resourceName!
  );
}
