"""schemas/permissions.py: the role ladder, what each role grants, who may grant what, key scopes."""

from __future__ import annotations

import itertools
import uuid

import pytest

from schemas.permissions import (
    ROLE_ORDER,
    ROLE_PERMISSIONS,
    ActorType,
    Permission,
    Principal,
    Role,
    can_grant,
    permissions_for,
)

LADDER = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]


def test_the_ladder_runs_viewer_member_admin_owner():
    assert ROLE_ORDER == LADDER
    assert Role.VIEWER.rank < Role.MEMBER.rank < Role.ADMIN.rank < Role.OWNER.rank


@pytest.mark.parametrize("lower,higher", list(itertools.pairwise(LADDER)), ids=lambda r: r.value)
def test_each_role_grants_strictly_more_than_the_one_below(lower, higher):
    assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher]


def test_every_role_has_a_permission_set():
    assert set(ROLE_PERMISSIONS) == set(Role)


def test_users_admin_is_granted_by_no_role_and_no_scope():
    assert all(Permission.USERS_ADMIN not in granted for granted in ROLE_PERMISSIONS.values())
    assert Permission.USERS_ADMIN not in permissions_for(Role.OWNER, [Permission.USERS_ADMIN.value])


def test_every_other_permission_is_held_by_the_owner():
    assert set(Permission) - ROLE_PERMISSIONS[Role.OWNER] == {Permission.USERS_ADMIN}


@pytest.mark.parametrize("role,permission,held", [
    (Role.VIEWER, Permission.MEMORIES_READ, True),
    (Role.VIEWER, Permission.MEMORIES_WRITE, False),
    (Role.MEMBER, Permission.MEMORIES_WRITE, True),
    (Role.MEMBER, Permission.KEYS_MANAGE, False),
    (Role.MEMBER, Permission.MEMBERS_MANAGE, False),
    (Role.ADMIN, Permission.KEYS_MANAGE, True),
    (Role.ADMIN, Permission.MEMBERS_MANAGE, True),
    (Role.ADMIN, Permission.ORG_DELETE, False),
    (Role.OWNER, Permission.ORG_DELETE, True),
])
def test_the_matrix_draws_the_lines_the_routes_rely_on(role, permission, held):
    assert (permission in ROLE_PERMISSIONS[role]) is held


@pytest.mark.parametrize("granter,role", list(itertools.product(LADDER, LADDER)),
                         ids=lambda r: r.value)
def test_nobody_grants_above_their_own_role(granter, role):
    assert can_grant(granter, role) is (LADDER.index(role) <= LADDER.index(granter))


def test_only_owners_make_owners():
    assert [g for g in Role if can_grant(g, Role.OWNER)] == [Role.OWNER]


def test_without_scopes_a_role_grants_all_it_holds():
    for role in Role:
        assert permissions_for(role) == ROLE_PERMISSIONS[role]
        assert permissions_for(role, None) == ROLE_PERMISSIONS[role]


def test_scopes_narrow_a_role_to_their_intersection():
    assert permissions_for(Role.MEMBER, ["memories:read"]) == {Permission.MEMORIES_READ}
    assert permissions_for(Role.VIEWER, ["memories:read", "memories:write"]) == {Permission.MEMORIES_READ}


def test_scopes_never_widen_a_role():
    assert permissions_for(Role.VIEWER, ["org:delete", "keys:manage"]) == frozenset()


def test_an_empty_scope_list_grants_nothing():
    assert permissions_for(Role.OWNER, []) == frozenset()


def test_an_unknown_scope_is_an_error():
    with pytest.raises(ValueError):
        permissions_for(Role.OWNER, ["memories:everything"])


def test_a_principal_can_what_its_permissions_say():
    principal = Principal(ActorType.API_KEY, uuid.uuid4(), "key", org_id=uuid.uuid4(), role=Role.MEMBER,
                          permissions=permissions_for(Role.MEMBER, ["memories:read"]))
    assert principal.can(Permission.MEMORIES_READ)
    assert not principal.can(Permission.MEMORIES_WRITE)
    assert principal.actor == f"api_key:{principal.actor_id}"


def test_users_admin_follows_the_superuser_flag_not_the_permission_set():
    everything = frozenset(Permission)
    ordinary = Principal(ActorType.USER, uuid.uuid4(), "u", permissions=everything)
    superuser = Principal(ActorType.USER, uuid.uuid4(), "root", superuser=True)
    assert not ordinary.can(Permission.USERS_ADMIN)
    assert superuser.can(Permission.USERS_ADMIN)
    assert not superuser.can(Permission.MEMORIES_READ)
