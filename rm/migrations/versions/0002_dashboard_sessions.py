"""dashboard sessions: server-side sessions for the dashboard's cookie

Revision ID: 0002_dashboard_sessions
Revises: 0001_baseline
Create Date: 2026-12-07 03:50:00

Why: the dashboard cookie used to hold the API token itself; it now holds a random session id
whose hash is this table's key, so logout and token revocation end a session (rm/sessions.py).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002_dashboard_sessions'
down_revision: Union[str, Sequence[str], None] = '0001_baseline'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('dashboard_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id']),
    sa.PrimaryKeyConstraint('id_hash')
    )
    op.create_index('ix_dashboard_sessions_expires_at', 'dashboard_sessions', ['expires_at'])
    op.create_index('ix_dashboard_sessions_token_id', 'dashboard_sessions', ['token_id'])


def downgrade() -> None:
    op.drop_index('ix_dashboard_sessions_token_id', table_name='dashboard_sessions')
    op.drop_index('ix_dashboard_sessions_expires_at', table_name='dashboard_sessions')
    op.drop_table('dashboard_sessions')
