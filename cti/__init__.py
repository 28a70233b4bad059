"""966022 hotline CTI: AMI events → calls → screen-pops with pre-filled work orders."""
