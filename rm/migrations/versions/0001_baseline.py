"""baseline: the schema as create_all made it before migrations

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-07 03:44:00

Why frozen column types (String(48), not rm.models.DecimalText): a revision describes the schema
of its day and must not change when the models do. A database made by ``create_all`` before
migrations existed holds exactly this schema and is stamped here (see rm/schema.py).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001_baseline'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('bootstrap_tokens',
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('used_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('node_id')
    )
    op.create_table('budget_alerts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('period_start', sa.Float(), nullable=False),
    sa.Column('threshold', sa.String(length=48), nullable=False),
    sa.Column('committed', sa.String(length=48), nullable=False),
    sa.Column('amount', sa.String(length=48), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'period_start', 'threshold')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('cause', sa.String(length=32), nullable=False),
    sa.Column('pool', sa.String(length=64), nullable=True),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('task_id', sa.String(length=128), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_at', 'events', ['at'])
    op.create_index('ix_events_kind', 'events', ['kind'])
    op.create_index('ix_events_node_id', 'events', ['node_id'])
    op.create_index('ix_events_pool', 'events', ['pool'])
    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_state', 'jobs', ['state'])
    op.create_table('nodes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('pool', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('provider_ref', sa.String(length=256), nullable=True),
    sa.Column('worker', sa.String(length=256), nullable=True),
    sa.Column('running_tasks', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('registered_at', sa.Float(), nullable=True),
    sa.Column('idle_since', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_nodes_pool', 'nodes', ['pool'])
    op.create_index('ix_nodes_status', 'nodes', ['status'])
    op.create_table('policy_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_policy_versions_at', 'policy_versions', ['at'])
    op.create_table('ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('pool', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('price_per_hour', sa.String(length=48), nullable=False),
    sa.Column('unit_s', sa.Integer(), nullable=False),
    sa.Column('minimum_s', sa.Integer(), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('billed_s', sa.Integer(), nullable=True),
    sa.Column('cost', sa.String(length=48), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_id')
    )
    op.create_index('ix_ledger_open', 'ledger', ['ended_at'])
    op.create_index('ix_ledger_pool', 'ledger', ['pool'])
    op.create_index('ix_ledger_started_at', 'ledger', ['started_at'])
    op.create_table('node_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=False),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_node_history_node_id', 'node_history', ['node_id'])
    op.create_table('tasks',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('celery_id', sa.String(length=144), nullable=True),
    sa.Column('publishes', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('run', sa.String(length=128), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('after', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('queue', sa.String(length=256), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('timeout_s', sa.Float(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('completions', sa.Integer(), nullable=False),
    sa.Column('queued_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_tasks_celery_id', 'tasks', ['celery_id'])
    op.create_index('ix_tasks_job_id', 'tasks', ['job_id'])
    op.create_index('ix_tasks_job_name', 'tasks', ['job_id', 'name'])
    op.create_index('ix_tasks_job_state', 'tasks', ['job_id', 'state'])
    op.create_index('ix_tasks_state', 'tasks', ['state'])


def downgrade() -> None:
    for table in ("tasks", "node_history", "ledger", "policy_versions", "nodes", "jobs", "events",
                  "budget_alerts", "bootstrap_tokens", "api_tokens"):
        op.drop_table(table)  # its indexes go with it
