from eventstore.cli import main

main()
