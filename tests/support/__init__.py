"""What the tests share: databases, processes, factories, stored histories, tenants, sweeps,
and readers and writers of files (images, archives, raw HTTP, data files). Fixtures stay in
the ``conftest.py`` files, which import from here."""
