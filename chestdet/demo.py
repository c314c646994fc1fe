"""`python -m chestdet.demo` (make demo): the command lives in chestdet.commands.demo."""

from chestdet.commands.demo import entry

if __name__ == "__main__":
    entry()
