//! Synthetic chest/abdomen CT with exactly known vertebral anatomy and pathology.
