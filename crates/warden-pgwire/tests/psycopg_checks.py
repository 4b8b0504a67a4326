"""What the psycopg scripts in this directory share: counted checks and the "OK <n>" line that
tests/clients.rs looks for."""


class Checks:
    def __init__(self):
        self.count = 0

    def __call__(self, cond, what):
        if not cond:
            raise AssertionError(what)
        self.count += 1

    def ok(self):
        print(f"OK {self.count}")
