from neuralsim.cli import main

main()
