"""What a driver's exception means, told apart without importing the drivers outside engine/db."""

from __future__ import annotations

import sqlite3

import psycopg
from psycopg import errors as pgerrors

from engine import errors
from engine.db import faults


def test_each_driver_fault_is_named():
    assert faults.fault(sqlite3.OperationalError("database is locked")) == faults.BUSY
    assert faults.fault(sqlite3.OperationalError("database or disk is full")) == faults.FULL
    assert faults.fault(sqlite3.OperationalError("attempt to write a readonly database")) == faults.READ_ONLY
    assert faults.fault(pgerrors.DiskFull("could not extend file")) == faults.FULL
    assert faults.fault(pgerrors.SerializationFailure("could not serialize")) == faults.BUSY
    assert faults.fault(psycopg.OperationalError("server closed the connection unexpectedly")) == faults.LOST
    assert faults.fault(ValueError("x")) is None
    assert psycopg.Error in faults.driver_errors() and sqlite3.Error in faults.driver_errors()


def test_the_road_of_a_database_failure():
    assert errors.classify(psycopg.OperationalError("connection refused")).error_class == errors.TRANSIENT
    assert errors.classify(pgerrors.DiskFull("no space left")).error_class == errors.RESOURCE
    assert errors.classify(sqlite3.OperationalError("database is locked")).error_class == errors.TRANSIENT


def test_a_server_lost_mid_command_is_a_sentence_not_a_traceback(capsys):
    from ewg_tui import cli

    code = cli._database_failed(psycopg.OperationalError("server closed the connection unexpectedly\n..."))
    assert code == cli.EXIT_DATABASE
    err = capsys.readouterr().err
    assert "the database server went away during the command" in err and "Traceback" not in err
