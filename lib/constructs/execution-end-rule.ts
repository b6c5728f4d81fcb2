import { ArnFormat, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

/** The end statuses the rule reacts to: those in which no Catch of the execution ran. */
export const EXECUTION_END_STATUSES = ['ABORTED', 'TIMED_OUT', 'FAILED'] as const;

/** Props of ExecutionEndRule. */
export interface ExecutionEndRuleProps {
  /** The orchestrator Lambda (its `execution-ended` task records the end and releases the lock). */
  readonly orchestrator: lambda.IFunction;
  /** The state machines whose executions may hold the migration lock. */
  readonly stateMachines: readonly sfn.StateMachine[];
}

/**
 * What keeps a dead execution from stranding the migration on AWS:
 * - an EventBridge rule on Step Functions "Execution Status Change" (ABORTED, TIMED_OUT, FAILED)
 *   of the given state machines, which invokes the orchestrator with
 *   `{"task":"execution-ended","actor":<execution ARN>,"status":…}`: the end is recorded in the
 *   audit log and that execution's lock released (a "Stop execution" from the console runs no
 *   Catch, so nothing else would);
 * - the right to DescribeExecution on those state machines' executions, so that taking the lock
 *   can tell a dead holder from a live one (the takeover when the rule's event was missed).
 */
export class ExecutionEndRule extends Construct {
  public readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: ExecutionEndRuleProps) {
    super(scope, id);
    if (props.stateMachines.length === 0)
      throw new Error(`${this.node.path}: stateMachines must name at least one state machine`);
    this.rule = new events.Rule(this, 'Rule', {
      description:
        'Records the end of a migration execution that stopped without its Catch, and releases its lock',
      eventPattern: {
        source: ['aws.states'],
        detailType: ['Step Functions Execution Status Change'],
        detail: {
          status: [...EXECUTION_END_STATUSES],
          stateMachineArn: props.stateMachines.map((m) => m.stateMachineArn),
        },
      },
    });
    this.rule.addTarget(
      new targets.LambdaFunction(props.orchestrator, {
        event: events.RuleTargetInput.fromObject({
          task: 'execution-ended',
          actor: events.EventField.fromPath('$.detail.executionArn'),
          status: events.EventField.fromPath('$.detail.status'),
          stateMachineArn: events.EventField.fromPath('$.detail.stateMachineArn'),
        }),
        // A missed event only delays the release to the next run's liveness check.
        retryAttempts: 10,
        maxEventAge: Duration.hours(2),
      }),
    );

    // A policy of its own (not the function's default policy, which the state machines' own
    // dependency on the function would turn into a cycle).
    const stack = Stack.of(this);
    const describe = new iam.Policy(this, 'DescribeExecutions', {
      roles: props.orchestrator.role ? [props.orchestrator.role] : [],
      statements: [
        new iam.PolicyStatement({
          actions: ['states:DescribeExecution'],
          resources: props.stateMachines.map((m) =>
            stack.formatArn({
              service: 'states',
              resource: 'execution',
              resourceName: `${m.stateMachineName}:*`,
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          ),
        }),
      ],
    });
    for (const m of props.stateMachines) {
      const logicalId = stack.getLogicalId(m.node.defaultChild as sfn.CfnStateMachine);
      Validations.of(describe).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<${logicalId}.Name>:*]`,
        reason:
          'Execution names are chosen at run time; the grant is DescribeExecution on this state machine’s executions only',
      });
    }
  }
}
