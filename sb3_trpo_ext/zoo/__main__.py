from sb3_trpo_ext.zoo.cli import main

main()
