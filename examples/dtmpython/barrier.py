"""DTM's sub-transaction barrier on PostgreSQL, for psycopg2.

dtmcli-py's barrier speaks MySQL only (INSERT IGNORE); this is the same
algorithm as dtmcli's Go barrier for PostgreSQL: in the business
transaction, insert the origin op's row (a compensation's origin is the
action) and the current op's row, ignoring conflicts. A compensation whose
origin row was new is a null compensation (the action never committed); a
current row that already existed is a duplicate call or a hanging action
arriving after its compensation. Only otherwise the business code runs, and
the transaction commits or rolls back with it.
"""

ORIGIN = {"cancel": "try", "compensate": "action"}

INSERT = """INSERT INTO dtm_barrier.barrier (trans_type, gid, branch_id, op, barrier_id, reason)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT ON CONSTRAINT uniq_barrier DO NOTHING"""


class BranchBarrier:
    def __init__(self, trans_type, gid, branch_id, op):
        if not (trans_type and gid and branch_id and op):
            raise ValueError("barrier: the query needs trans_type, gid, branch_id and op")
        self.trans_type, self.gid, self.branch_id, self.op = trans_type, gid, branch_id, op
        self.barrier_id = 0

    def _insert(self, cursor, op, reason):
        cursor.execute(INSERT, (self.trans_type, self.gid, self.branch_id, op, "%02d" % self.barrier_id, reason))
        return cursor.rowcount

    def call(self, conn, busi_callback):
        """Runs busi_callback(cursor) at most once per (gid, branch, op), in
        one transaction with the barrier rows. Exceptions roll back and
        propagate."""
        self.barrier_id += 1
        with conn:  # commits on success, rolls back on an exception
            with conn.cursor() as cursor:
                origin = ORIGIN.get(self.op, "")
                origin_affected = self._insert(cursor, origin, self.op) if origin else 0
                current_affected = self._insert(cursor, self.op, self.op)
                if origin and origin_affected > 0:
                    return "null compensation"
                if current_affected == 0:
                    return "duplicate or hanging"
                busi_callback(cursor)
                return "done"


def barrier_from_req(request):
    """The tutorial's helper: the barrier of the branch a DTM call names."""
    a = request.args
    return BranchBarrier(a.get("trans_type"), a.get("gid"), a.get("branch_id"), a.get("op"))
