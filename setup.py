"""Maps the repository's folders onto the single import root ``vlgenrm``.

shared/vlgenrm -> vlgenrm              (the core library)
services/<x>   -> vlgenrm.services.<x> (thin service shells)
operators/<x>  -> vlgenrm.operators.<x> (the Kubernetes operator)
"""

from setuptools import find_packages, setup

ROOTS = {"vlgenrm.services": "services", "vlgenrm.operators": "operators"}

packages = find_packages("shared", include=["vlgenrm", "vlgenrm.*"])
package_dir = {"vlgenrm": "shared/vlgenrm"}
for import_name, folder in ROOTS.items():
    packages.append(import_name)
    package_dir[import_name] = folder
    packages += [f"{import_name}.{p}" for p in find_packages(folder)]

setup(packages=packages, package_dir=package_dir, package_data={"vlgenrm": ["py.typed"], "vlgenrm.experts": ["data/*.json"]})
